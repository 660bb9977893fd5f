using System.Reflection;
using Xunit;

namespace Cow.Tests.Suite;

/// <summary>
/// Every test class names its tier with exactly one class-level <c>[Trait("Tier", ...)]</c>, so that
/// <c>dotnet test --filter Tier=unit</c> (or engine, mount, kernel, slow) runs a tier and a new test class cannot
/// be left out of all of them. Mount and kernel tests need root, /dev/fuse or loop devices: their tests are
/// skippable facts and theories, so that on a machine without those they report skipped, never passed.
/// </summary>
[Trait("Tier", "unit")]
public sealed class TestTierTests
{
    private static readonly string[] Tiers = { "unit", "engine", "mount", "kernel", "slow" };

    private static IEnumerable<Type> TestClasses() =>
        typeof(TestTierTests).Assembly.GetTypes().Where(t => t.IsClass && !t.IsAbstract && t.GetMethods(
            BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static).Any(m => m.GetCustomAttributes<FactAttribute>().Any()));

    private static string[] TiersOf(Type t) => t.GetCustomAttributesData()
        .Where(a => a.AttributeType == typeof(TraitAttribute) && (string?)a.ConstructorArguments[0].Value == "Tier")
        .Select(a => (string)a.ConstructorArguments[1].Value!).ToArray();

    [Fact]
    public void Every_test_class_has_exactly_one_known_tier()
    {
        var classes = TestClasses().ToList();
        Assert.NotEmpty(classes);
        var wrong = classes.Where(t => TiersOf(t) is var tiers && (tiers.Length != 1 || !Tiers.Contains(tiers[0])))
            .Select(t => $"{t.FullName}: [{string.Join(", ", TiersOf(t))}]").ToList();
        Assert.True(wrong.Count == 0, "test classes without exactly one Tier trait (unit, engine, mount, kernel or slow):\n" + string.Join("\n", wrong));
    }

    [Fact]
    public void Mount_and_kernel_tests_can_report_skipped()
    {
        var wrong = TestClasses().Where(t => TiersOf(t) is ["mount"] or ["kernel"])
            .SelectMany(t => t.GetMethods().Where(m => m.GetCustomAttributes<FactAttribute>().Any(a =>
                a is not SkippableFactAttribute and not SkippableTheoryAttribute)).Select(m => $"{t.FullName}.{m.Name}"))
            .ToList();
        Assert.True(wrong.Count == 0, "mount and kernel tests must be [SkippableFact] or [SkippableTheory]:\n" + string.Join("\n", wrong));
    }
}
