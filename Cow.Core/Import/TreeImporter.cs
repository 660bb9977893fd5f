using Cow.Core.FileSystem;
using Mono.Unix.Native;

namespace Cow.Core.Import;

/// <summary>
/// Makes an <see cref="ImportPlan"/> in the live tree of a pool: each node with its type, mode (all 12 bits),
/// owner, device number, symlink target, hard links (one inode, nlink = its names), every xattr of every namespace
/// copied raw (POSIX ACLs included: system.posix_acl_access/default are xattrs), regular files' data on the base
/// device with holes kept, then atime and mtime to the nanosecond (directories' after they are filled). An imported
/// node's ctime and birth time are the time of the import: the host's cannot be set. Commits once at the end.
/// Stateless; runs on the caller's thread, alone on a pool nobody else uses.
/// </summary>
public static class TreeImporter
{
    /// <summary>Imports <paramref name="plan"/> under directory <paramref name="into"/> of the live tree.
    /// <paramref name="status"/> hears each host path as it is copied. Throws <see cref="PoolException"/> naming
    /// the path on any failure (the pool is then partly filled: the caller discards it), or
    /// <see cref="OperationCanceledException"/>.</summary>
    public static void Run(Engine.Engine engine, ImportPlan plan, long into, Action<string>? status = null, CancellationToken ct = default)
    {
        var nodes = plan.Nodes;
        var ino = new long[nodes.Count];
        for (int i = 0; i < nodes.Count; i++)
        {
            ct.ThrowIfCancellationRequested();
            var n = nodes[i];
            long parent = n.Parent < 0 ? into : ino[n.Parent];
            if (n.LinkOf >= 0)
            {
                Check(engine.Link(ino[n.LinkOf], parent, n.Name!, out _), n, "link");
                ino[i] = ino[n.LinkOf];
                continue;
            }
            if (n.Name == null)
            {
                ino[i] = parent;
                // Owner first, then mode: a chown may clear setuid/setgid, the mode given after it is the source's.
                Check(engine.SetAttr(parent, new SetAttrRequest { Uid = n.Uid, Gid = n.Gid }, out _), n, "set the owner of");
                Check(engine.SetAttr(parent, new SetAttrRequest { Mode = n.Mode & 0xFFF }, out _), n, "set the mode of");
            }
            else
            {
                Check(engine.MakeNode(parent, n.Name, n.Mode, n.Rdev, n.Uid, n.Gid, n.Target, out var a), n, "create");
                ino[i] = a.Ino;
            }
            if (n.IsRegular && n.DataRanges.Count > 0)
            {
                status?.Invoke(n.Path);
                using var h = ImportPlan.OpenForImport(n.Path);
                Errno e;
                try { e = engine.ImportData(ino[i], n.Size, n.DataRanges, (off, buf) => RandomAccess.Read(h, buf, off), ct); }
                catch (IOException x) { throw new PoolException($"import source {n.Path}: cannot be read: {x.Message}", x); }
                if (e == Errno.ENOSPC)
                    throw new PoolException($"import {n.Path}: the base device is full ({e}); the scan counted {plan.DataBlocks} blocks of {plan.BlockSize} bytes for the whole import");
                Check(e, n, "copy the data of");
            }
            else if (n.IsRegular && n.Size > 0)
                Check(engine.ImportData(ino[i], n.Size, [], (_, _) => 0, ct), n, "size");
            var copied = CopyXattrs(engine, n, ino[i]);
            if (n.Name != null && (n.Mode & 0xF000) != 0xA000)
            {
                // A new node took its directory's default ACL (and a mode limited by it) when it was made: the
                // source's ACLs and mode are what it gets (the mode after the xattrs: a chmod keeps an ACL's mask in step).
                foreach (var acl in (ReadOnlySpan<string>)[PosixAcl.AccessXattr, PosixAcl.DefaultXattr])
                    if (!copied.Contains(acl) && engine.RemoveXattr(ino[i], acl) is var e and not (0 or Errno.ENODATA))
                        Check(e, n, $"remove the inherited {acl} of");
                Check(engine.SetAttr(ino[i], new SetAttrRequest { Mode = n.Mode & 0xFFF }, out _), n, "set the mode of");
            }
            if (!n.IsDirectory) SetTimes(engine, n, ino[i]);
        }
        // Directories' times last, deepest first: filling a directory changes its mtime.
        for (int i = nodes.Count - 1; i >= 0; i--)
            if (nodes[i].IsDirectory) SetTimes(engine, nodes[i], ino[i]);
        engine.Commit();
    }

    private static void SetTimes(Engine.Engine engine, SourceNode n, long ino) =>
        Check(engine.SetAttr(ino, new SetAttrRequest { AtimeNs = n.AtimeNs, MtimeNs = n.MtimeNs }, out _), n, "set the times of");

    /// <summary>Copies every xattr of the source node; returns the names copied.</summary>
    private static HashSet<string> CopyXattrs(Engine.Engine engine, SourceNode n, long ino)
    {
        var copied = new HashSet<string>(StringComparer.Ordinal);
        if (Syscall.llistxattr(n.Path, out string[] names) < 0)
        {
            var err = Stdlib.GetLastError();
            if (err == Errno.EOPNOTSUPP) return copied;   // the host file system has no xattrs
            throw new PoolException($"import source {n.Path}: cannot list its xattrs: {Syscall.strerror(err)} ({err})");
        }
        foreach (var name in names)
        {
            if (string.IsNullOrEmpty(name)) continue;
            if (Syscall.lgetxattr(n.Path, name, out byte[] value) < 0)
            {
                var err = Stdlib.GetLastError();
                if (err == Errno.ENODATA) continue;   // removed since it was listed
                throw new PoolException($"import source {n.Path}: cannot read xattr {name}: {Syscall.strerror(err)} ({err})");
            }
            Check(engine.SetXattr(ino, name, value ?? [], XattrSetFlags.None), n, $"set xattr {name} on");
            copied.Add(name);
        }
        return copied;
    }

    private static void Check(Errno e, SourceNode n, string what)
    {
        if (e != 0) throw new PoolException($"import {n.Path}: cannot {what} it in the pool: {Syscall.strerror(e)} ({e})");
    }
}
