namespace Cow.Tests; public class SmokeTests { [Xunit.Fact] public void Builds() => Xunit.Assert.Equal(1, Cow.Core.CoreInfo.FormatVersion); }
