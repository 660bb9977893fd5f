namespace Cow.Core; public static class CoreInfo { public const int FormatVersion = 1; }
