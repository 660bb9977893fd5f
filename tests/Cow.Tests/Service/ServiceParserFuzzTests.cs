using System.Text;
using System.Text.Json.Nodes;
using Cow.Cli.Service;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;
using Xunit.Abstractions;

namespace Cow.Tests.Service;

/// <summary>
/// Fuzzing of the service's two parsers, seeded (COW_SEED reruns one; the seed is printed on failure): the
/// configuration file (mutated copies of a valid file: every outcome is a configuration or a list of errors
/// that each name a line and column inside the text, never an exception) and the control socket's request
/// handler (mutated and generated requests for every verb: every answer is a JSON object with "ok", and a
/// refusal carries an errno name and a message, never an exception). The handler runs against a service
/// that mounted nothing, so no request can change anything.
/// </summary>
[Trait("Tier", "unit")]
public class ServiceParserFuzzTests(ITestOutputHelper output)
{
    private const string ValidConfig = ServeConfigTests.Valid;

    private static int Seed() =>
        int.TryParse(Environment.GetEnvironmentVariable("COW_SEED"), out var s) ? s : Random.Shared.Next();

    private void WithSeed(Action<Random> body)
    {
        int seed = Seed();
        try { body(new Random(seed)); }
        catch (Exception) { output.WriteLine($"COW_SEED={seed}"); Console.Error.WriteLine($"{nameof(ServiceParserFuzzTests)}: COW_SEED={seed}"); throw; }
    }

    private static readonly string[] Fragments =
    [
        "[", "]", "=", "#", ";", "\"", "\r", "\n", "\t", " ", "\0", "[pool]", "[pool a b]", "[retention zz]", "[control x]",
        "path", "mountpoint", "threads = -1", "threads = 99999999999", "mode = 0999", "mode = 7777", "iomap = maybe",
        "hourly = 1e9", "min-free-percent = 101", "timeline = ja", "é", "\u2028", "\uFFFF", "[pool data]", "group = no-such-group-x",
    ];

    private static string MutateText(Random r, string text)
    {
        var lines = text.Split('\n').ToList();
        int edits = 1 + r.Next(4);
        for (int e = 0; e < edits; e++)
        {
            int at = r.Next(Math.Max(1, lines.Count));
            switch (r.Next(9))
            {
                case 0: if (lines.Count > 0) lines.RemoveAt(at); break;
                case 1: if (lines.Count > 0) lines.Insert(at, lines[at]); break;
                case 2: lines.Insert(at, Fragments[r.Next(Fragments.Length)]); break;
                case 3:
                    if (lines.Count > 0 && lines[at].Length > 0)
                    {
                        var sb = new StringBuilder(lines[at]);
                        sb[r.Next(sb.Length)] = (char)r.Next(1, 0xD800);
                        lines[at] = sb.ToString();
                    }
                    break;
                case 4: if (lines.Count > 0) lines[at] = lines[at][..r.Next(lines[at].Length + 1)]; break;
                case 5: if (lines.Count > 0) lines[at] += Fragments[r.Next(Fragments.Length)]; break;
                case 6: lines.Insert(at, new string((char)r.Next(32, 127), r.Next(1, 5000))); break;
                case 7: { var b = new byte[r.Next(1, 64)]; r.NextBytes(b); lines.Insert(at, Encoding.Latin1.GetString(b)); break; }
                default: lines = lines.Take(r.Next(lines.Count + 1)).ToList(); break;
            }
        }
        return string.Join(r.Next(4) == 0 ? "\r\n" : "\n", lines);
    }

    [Fact]
    public void MutatedConfigurationFilesGiveAConfigurationOrErrorsWithPlaces()
    {
        Assert.NotNull(ServeConfig.Parse(ValidConfig, "cow.conf", out var none));
        Assert.Empty(none);
        WithSeed(r =>
        {
            for (int i = 0; i < 3000; i++)
            {
                var text = MutateText(r, ValidConfig);
                var c = ServeConfig.Parse(text, "cow.conf", out var errors);
                int lineCount = text.Split('\n').Length;
                if (c != null)
                {
                    Assert.Empty(errors);
                    Assert.NotEmpty(c.Pools);
                    continue;
                }
                Assert.NotEmpty(errors);
                foreach (var e in errors)
                {
                    Assert.Equal("cow.conf", e.File);
                    Assert.False(string.IsNullOrWhiteSpace(e.Message), $"an error without a message in:\n{text}");
                    Assert.InRange(e.Line, 0, lineCount);   // 0: the file as a whole (e.g. no pool at all)
                    Assert.True(e.Column >= 0, $"column {e.Column}: {e}");
                    if (e.Line > 0) Assert.True(e.Column >= 1, $"{e} names a line but no column");
                }
            }
        });
    }

    [Fact]
    public void WhatTheFuzzersFoundStaysFixed()
    {
        // A NUL in a path made the parser throw (Path.GetFullPath) instead of naming the place.
        Assert.Null(ServeConfig.Parse("[pool a]\npath = /srv/p\0ol\nmountpoint = /m\n", "cow.conf", out var errors));
        var e = Assert.Single(errors);
        Assert.Equal((2, 14), (e.Line, e.Column));
        Assert.Contains("control character U+0000", e.Message);
        // A request naming "verb" twice made the handler throw (the connection ended without an answer).
        var config = ServeConfig.Parse("[pool p0]\npath = /nonexistent/pool\nmountpoint = /nonexistent/mnt\n", "f", out _)!;
        using var server = new ControlServer(config, new PoolMounts(config, NullLogger<PoolMounts>.Instance), NullLogger<ControlServer>.Instance);
        var answer = server.Handle("""{"verb":"status","verb":"snapshot-delete"}""", 0);
        Assert.False((bool)answer["ok"]!);
        Assert.Equal("EINVAL", (string?)answer["error"]);
        Assert.Contains("malformed JSON request", (string?)answer["message"]);
        // An escaped lone surrogate made reading the string throw.
        answer = server.Handle("""{"verb":"snapshot-list","pool":"\uDD8A"}""", 0);
        Assert.Equal("EINVAL", (string?)answer["error"]);
        Assert.Contains("not valid Unicode", (string?)answer["message"]);
    }

    private static readonly string[] Verbs =
    [
        "status", "snapshot-create", "snapshot-delete", "snapshot-list", "snapshot-hold", "snapshot-release",
        "snapshot-diff", "snapshot-clone", "snapshot-rollback", "df", "clean", "clean-cancel", "reboot", "", "STATUS",
    ];

    private static readonly string[] Keys = ["verb", "pool", "name", "tag", "to", "destination", "from", "properties", "until", "extra"];

    private static JsonNode? RandomValue(Random r, int depth = 0) => r.Next(depth > 3 ? 6 : 9) switch
    {
        0 => null,
        1 => JsonValue.Create(r.Next(int.MinValue, int.MaxValue)),
        2 => JsonValue.Create(r.NextDouble() * 1e300),
        3 => JsonValue.Create(r.Next(2) == 0),
        4 => JsonValue.Create(new[] { "data", "/srv/data", "p0", "a/b", "..", ".", "", "s1", "x\0y", new string('n', 300), "é\u2028" }[r.Next(11)]),
        5 => JsonValue.Create(Verbs[r.Next(Verbs.Length)]),
        6 => new JsonArray(Enumerable.Range(0, r.Next(3)).Select(_ => RandomValue(r, depth + 1)).ToArray()),
        7 => new JsonObject(Enumerable.Range(0, r.Next(3)).Select(k => KeyValuePair.Create($"k{k}", RandomValue(r, depth + 1)))),
        _ => JsonValue.Create(new string((char)r.Next(32, 0xD800), r.Next(0, 40))),
    };

    private static string RandomRequest(Random r)
    {
        var o = new JsonObject { ["verb"] = Verbs[r.Next(Verbs.Length)] };
        foreach (var k in Keys.Where(_ => r.Next(3) == 0)) o[k] = RandomValue(r);
        var line = o.ToJsonString();
        switch (r.Next(6))
        {
            case 0: return line[..r.Next(line.Length + 1)];                                       // truncated
            case 1: { var b = line.ToCharArray(); b[r.Next(b.Length)] = (char)r.Next(1, 128); return new string(b); }
            case 2: return line.Replace("{\"verb\"", "{\"verb\":\"status\",\"verb\"");              // a duplicate key
            case 3: return new string('[', r.Next(1, 200)) + line;                                 // deep nesting
            default: return line;
        }
    }

    [Fact]
    public void RandomControlRequestsGetAnAnswerNeverAnException()
    {
        var config = ServeConfig.Parse("[control]\nsocket = /nonexistent/cow-fuzz.sock\n[pool p0]\npath = /nonexistent/pool\nmountpoint = /nonexistent/mnt\n", "fuzz.conf", out var errors)!;
        Assert.Empty(errors);
        var mounts = new PoolMounts(config, NullLogger<PoolMounts>.Instance);   // never started: nothing is mounted
        using var server = new ControlServer(config, mounts, NullLogger<ControlServer>.Instance);
        WithSeed(r =>
        {
            for (int i = 0; i < 20000; i++)
            {
                var line = RandomRequest(r);
                JsonObject answer;
                try { answer = server.Handle(line, uid: (uint)r.Next(2) * 1000); }
                catch (Exception e) { throw new Xunit.Sdk.XunitException($"request {line} threw {e}"); }
                Assert.True(answer["ok"] is JsonValue ok && ok.TryGetValue<bool>(out _), $"{line} → {answer.ToJsonString()}");
                if ((bool)answer["ok"]!) continue;
                Assert.False(string.IsNullOrEmpty((string?)answer["error"]), $"{line} → {answer.ToJsonString()}");
                Assert.False(string.IsNullOrEmpty((string?)answer["message"]), $"{line} → {answer.ToJsonString()}");
            }
        });
    }
}
