using Cow.Core.Devices;
using Cow.Core.Format;
using Cow.Core.Metadata;

namespace Cow.Core.Import;

/// <summary><c>mkfs --import</c>: makes a pool with <see cref="Pool.Create(string, PoolCreateOptions)"/> and fills its root from an
/// <see cref="ImportPlan"/> (<see cref="TreeImporter"/>), all or nothing: a refused or failed import undoes mkfs.
/// Stateless; each call works on its own new pool.</summary>
public static class PoolImport
{
    /// <summary>
    /// mkfs as one step that either makes the whole pool or leaves nothing behind: refuses (before writing anything)
    /// an import that needs more data blocks than the base device holds, naming both; makes the pool; imports
    /// <paramref name="plan"/> (if any) into its root. On any failure (a refused device, an unreadable source, a
    /// full base device, an I/O error, <paramref name="ct"/> cancelled) it undoes mkfs (<see cref="MkfsUndo"/>) and
    /// throws <see cref="PoolException"/> saying what failed and in which state it left the folder and devices.
    /// </summary>
    public static Pool Create(string folder, PoolCreateOptions options, ImportPlan? plan, Action<string>? status = null, CancellationToken ct = default)
    {
        folder = Path.GetFullPath(folder);
        if (plan != null && plan.BlockSize != options.BlockSize) throw new ArgumentException("the plan was scanned for another block size", nameof(plan));
        if (plan is { DataBlocks: > 0 })
        {
            long capacity = BaseDataBlocks(options);
            if (plan.DataBlocks > capacity)
                throw new PoolException($"the import needs {plan.DataBlocks:N0} data blocks ({Bytes(plan.DataBlocks * options.BlockSize)}) on the base device, "
                    + $"which holds {capacity:N0} ({Bytes(capacity * options.BlockSize)})"
                    + (options.BaseDevice == null ? $"; give a larger --base-size (at least {Bytes(MinBaseSize(plan.DataBlocks, options.BlockSize))})" : "")
                    + "; nothing was written");
        }
        var undo = new MkfsUndo(folder, options);
        Pool? pool = null;
        try
        {
            pool = Pool.Create(folder, options);
            if (plan != null) TreeImporter.Run(pool.Engine, plan, pool.Live.RootIno, status, ct);
            return pool;
        }
        catch (Exception e)
        {
            bool[] written = [false, false];
            if (pool != null)
            {
                try
                {
                    foreach (var u in pool.Engine.DeviceUsage())
                        if (u.Cookie is FormatConstants.BaseCookie or FormatConstants.LogCookie) written[u.Cookie - 1] = u.UsedBlocks > 0;
                }
                catch (InvalidOperationException) { written = [true, true]; }
                try { pool.Dispose(); } catch (Exception x) when (x is IOException or PoolException or InvalidOperationException) { }
            }
            string state = undo.Undo(written);
            if (e is not (PoolException or IOException or UnauthorizedAccessException or OperationCanceledException))
                throw new InvalidOperationException($"mkfs failed on a bug ({e.Message}); {state}", e);   // undone, still a bug
            string what = e is OperationCanceledException ? "mkfs was interrupted" : e.Message;
            throw new PoolException($"{what}; {state}", e);
        }
    }

    /// <summary>Data blocks the base device of a pool made with <paramref name="o"/> will hold: its blocks less one
    /// reserved block per segment (format.md, segments). Opens a given base device read-only to learn its size.</summary>
    public static long BaseDataBlocks(PoolCreateOptions o)
    {
        long bytes = o.BaseSize;
        if (o.BaseDevice != null)
        {
            var full = Path.GetFullPath(o.BaseDevice);   // relative to the current directory, as Create takes it
            if (File.Exists(full))
            {
                try { using var d = FileBlockDevice.Open(full, writable: false); bytes = d.Length; }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new PoolException($"base device {full}: {e.Message}", e); }
            }
        }
        return DataBlocksOf(bytes / o.BlockSize);
    }

    private static long DataBlocksOf(long blocks) => Math.Max(0, blocks - (blocks + FormatConstants.SegmentBlocks - 1) / FormatConstants.SegmentBlocks);

    /// <summary>The smallest whole-MiB base image that holds <paramref name="dataBlocks"/>.</summary>
    private static long MinBaseSize(long dataBlocks, int bs)
    {
        long blocks = dataBlocks + (dataBlocks + FormatConstants.SegmentBlocks - 2) / (FormatConstants.SegmentBlocks - 1) + 1;
        while (DataBlocksOf(blocks) < dataBlocks) blocks++;
        long bytes = blocks * bs;
        return (bytes + (1 << 20) - 1) & ~((1L << 20) - 1);
    }

    private static string Bytes(long b) => b switch
    {
        >= 1L << 30 => $"{b / (double)(1L << 30):F2} GiB",
        >= 1L << 20 => $"{b / (double)(1L << 20):F2} MiB",
        >= 1L << 10 => $"{b / 1024.0:F1} KiB",
        _ => $"{b} B",
    };

    /// <summary>
    /// What mkfs changes, recorded before it runs, and how to undo it: a pool folder mkfs made is removed; in a
    /// folder that existed only the pool's own files that were not there before go, and its mode is restored; a
    /// device image mkfs created is removed; a device that existed gets its first block (the superblock mkfs
    /// wrote) back as it was if mkfs wrote nothing else on it, or zeroed if the import wrote data on it (so it
    /// is not taken for a pool or for what it held before). Not thread-safe; used once.
    /// </summary>
    private sealed class MkfsUndo
    {
        private readonly string _folder;
        private readonly bool _folderExisted;
        private readonly UnixFileMode? _folderMode;
        private readonly HashSet<string> _ownFilesBefore = new(StringComparer.Ordinal);
        private readonly List<(string Role, string Path, byte[]? FirstBlock)> _devices = new();
        private readonly int _bs;

        public MkfsUndo(string folder, PoolCreateOptions o)
        {
            _folder = folder; _bs = o.BlockSize;
            _folderExisted = Directory.Exists(folder);
            if (_folderExisted)
            {
                if (!OperatingSystem.IsWindows()) _folderMode = File.GetUnixFileMode(folder);
                foreach (var f in OwnFiles(folder)) if (File.Exists(f)) _ownFilesBefore.Add(f);
            }
            foreach (var (role, given) in new[] { ("base", o.BaseDevice), ("log", o.LogDevice) })
            {
                if (given == null) continue;
                var full = Path.GetFullPath(given);
                byte[]? first = null;
                if (File.Exists(full))
                {
                    try
                    {
                        using var d = FileBlockDevice.Open(full, writable: false);
                        if (d.Length >= _bs) { first = new byte[_bs]; d.Read(0, first); }
                        else first = [];
                    }
                    catch (Exception e) when (e is IOException or UnauthorizedAccessException) { first = []; }
                }
                _devices.Add((role, full, first));
            }
        }

        private static IEnumerable<string> OwnFiles(string folder)
        {
            var meta = Path.Combine(folder, Pool.MetadataFile);
            return [meta, MetadataStore.LogPath(meta), Path.Combine(folder, Pool.LockFile), Path.Combine(folder, Pool.BaseImage), Path.Combine(folder, Pool.LogImage)];
        }

        /// <summary>Undoes mkfs; <paramref name="written"/>[cookie − 1]: whether data blocks were written on that device.
        /// Returns what state everything is in, for the administrator.</summary>
        public string Undo(bool[] written)
        {
            var said = new List<string>();
            foreach (var (role, path, first) in _devices)
            {
                try
                {
                    if (first == null)
                    {
                        if (File.Exists(path)) { File.Delete(path); said.Add($"the {role} image {path} it created was removed"); }
                        continue;
                    }
                    if (first.Length == 0) continue;   // too small or unreadable: mkfs could not have formatted it
                    using var d = FileBlockDevice.Open(path, writable: true);
                    var now = new byte[_bs];
                    d.Read(0, now);
                    if (now.AsSpan().SequenceEqual(first)) continue;   // mkfs did not get to format it
                    bool data = written[role == "base" ? 0 : 1];
                    d.Write(0, data ? new byte[_bs] : first);
                    d.Flush();
                    said.Add(data
                        ? $"the {role} device {path} holds part of the import and its Cow superblock was wiped (first {_bs} bytes zeroed): what it held before is partly overwritten"
                        : $"the {role} device {path} has its first {_bs} bytes back as they were (mkfs wrote nothing else on it)");
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    said.Add($"the {role} device {path} could not be restored ({e.Message}): it may still hold a superblock of the unfinished pool; run mkfs again or wipe it");
                }
            }
            try
            {
                if (!_folderExisted)
                {
                    if (Directory.Exists(_folder)) Directory.Delete(_folder, recursive: true);
                    said.Insert(0, $"the pool folder {_folder} was removed");
                }
                else
                {
                    foreach (var f in OwnFiles(_folder))
                        if (!_ownFilesBefore.Contains(f) && File.Exists(f)) File.Delete(f);
                    if (_folderMode is { } m && !OperatingSystem.IsWindows()) File.SetUnixFileMode(_folder, m);
                    said.Insert(0, $"the pool folder {_folder} is as it was before (the files mkfs made were removed)");
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                said.Insert(0, $"the pool folder {_folder} could not be cleaned up ({e.Message}): remove what mkfs made by hand");
            }
            return "no pool was made: " + string.Join("; ", said);
        }
    }
}
