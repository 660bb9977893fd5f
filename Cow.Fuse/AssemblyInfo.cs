namespace Cow.Fuse; internal static class Placeholder { }
