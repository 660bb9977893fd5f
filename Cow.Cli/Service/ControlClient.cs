using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;

namespace Cow.Cli.Service;

/// <summary>
/// A connection to a running <c>cow serve</c>'s control socket (<see cref="ControlProtocol"/>). The socket
/// path is <c>$COW_SOCKET</c> when set, else <see cref="ControlConfig.DefaultSocket"/>. Threading: one
/// request at a time per instance (not thread-safe).
/// </summary>
public sealed class ControlClient : IDisposable
{
    private readonly Socket _socket;
    private readonly StreamReader _reader;
    private readonly StreamWriter _writer;

    public static string SocketPath => Environment.GetEnvironmentVariable("COW_SOCKET") is { Length: > 0 } s ? s : ControlConfig.DefaultSocket;

    /// <summary>The socket this client is connected to.</summary>
    public string SocketFile { get; }

    /// <summary>How long <see cref="Request"/> waits for an answer (default 120 s); zero: as long as it takes.</summary>
    public TimeSpan ReceiveTimeout
    {
        get => TimeSpan.FromMilliseconds(_socket.ReceiveTimeout);
        set => _socket.ReceiveTimeout = (int)value.TotalMilliseconds;
    }

    private ControlClient(Socket s, string path)
    {
        SocketFile = path;
        _socket = s;
        var stream = new NetworkStream(s, ownsSocket: false);
        _reader = new StreamReader(stream, new UTF8Encoding(false));
        _writer = new StreamWriter(stream, new UTF8Encoding(false)) { AutoFlush = true, NewLine = "\n" };
    }

    /// <summary>Connects, or returns null when no service listens at <paramref name="path"/> (no socket file,
    /// nobody listening, or no permission to connect: <paramref name="why"/> says which).</summary>
    public static ControlClient? TryConnect(string path, out string? why)
    {
        why = null;
        if (!File.Exists(path)) { why = $"no control socket at {path}"; return null; }
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try { s.Connect(new UnixDomainSocketEndPoint(path)); s.ReceiveTimeout = 120_000; return new ControlClient(s, path); }
        catch (SocketException e) { s.Dispose(); why = $"cannot connect to {path}: {e.Message}"; return null; }
    }

    /// <summary>Sends one request and reads its response.</summary>
    public JsonObject Request(JsonObject request) => Raw(request.ToJsonString(ControlProtocol.Json));

    /// <summary>Sends one raw line (tests send malformed ones) and reads the response line.</summary>
    public JsonObject Raw(string line)
    {
        _writer.WriteLine(line);
        var resp = _reader.ReadLine() ?? throw new IOException("the Cow service closed the control connection without answering");
        return JsonNode.Parse(resp) as JsonObject ?? throw new IOException($"the Cow service answered with something that is not a JSON object: {resp}");
    }

    /// <summary>Sends a stream verb's request, then <paramref name="input"/> as chunks (<see cref="ChunkedWriteStream"/>),
    /// then reads the response (<c>receive</c>). No time limit while it runs.</summary>
    public JsonObject Upload(JsonObject request, Stream input)
    {
        ReceiveTimeout = TimeSpan.Zero;
        _writer.WriteLine(request.ToJsonString(ControlProtocol.Json));
        using (var net = new NetworkStream(_socket, ownsSocket: false))
        {
            var chunks = new ChunkedWriteStream(net);
            var buf = new byte[ChunkedWriteStream.MaxChunk];
            int n;
            while ((n = input.ReadAtLeast(buf, buf.Length, throwOnEndOfStream: false)) > 0) chunks.Write(buf.AsSpan(0, n));
            chunks.End();
        }
        return ReadResponse();
    }

    /// <summary>Sends a stream verb's request and copies the chunks that follow to <paramref name="output"/>, then reads the
    /// response (<c>send</c>). No time limit while it runs.</summary>
    public JsonObject Download(JsonObject request, Stream output)
    {
        ReceiveTimeout = TimeSpan.Zero;
        _writer.WriteLine(request.ToJsonString(ControlProtocol.Json));
        using (var net = new NetworkStream(_socket, ownsSocket: false))
        {
            var chunks = new ChunkedReadStream(net);
            chunks.CopyTo(output, 1 << 20);
            output.Flush();
            if (chunks.Cut) throw new IOException("the Cow service closed the control connection in the middle of the stream");
        }
        return ReadResponse();
    }

    private JsonObject ReadResponse()
    {
        var resp = _reader.ReadLine() ?? throw new IOException("the Cow service closed the control connection without answering");
        return JsonNode.Parse(resp) as JsonObject ?? throw new IOException($"the Cow service answered with something that is not a JSON object: {resp}");
    }

    /// <summary>The configured pool (name, path, mount point) that a running service mounts for
    /// <paramref name="poolOrMountPoint"/> (pool folder or mount point), or null.</summary>
    public static JsonObject? FindServedPool(JsonObject status, string poolOrMountPoint)
    {
        var norm = Cow.Fuse.Mounting.MountTable.Normalize(poolOrMountPoint);
        if (status["pools"] is not JsonArray pools) return null;
        return pools.OfType<JsonObject>().FirstOrDefault(p => p["mounted"]?.GetValue<bool>() == true
            && ((string?)p["path"] == norm || (string?)p["mountpoint"] == norm));
    }

    public void Dispose()
    {
        _reader.Dispose();
        _writer.Dispose();
        _socket.Dispose();
    }
}
