using Mono.Unix.Native;

namespace Cow.Core.Engine;

// rename with RENAME_WHITEOUT (overlayfs on an upper layer).
public sealed partial class Engine
{
    /// <summary>
    /// renameat2(RENAME_WHITEOUT), optionally with RENAME_NOREPLACE: renames as <see cref="Rename"/> does and,
    /// in the same change (no commit can fall between them), leaves at the source name a whiteout: a character
    /// device 0/0 with permission bits 0, owned by <paramref name="uid"/>:<paramref name="gid"/> (the caller;
    /// the dispatcher applies the setgid-directory rule). As vfs_rename, when source and target are one inode
    /// nothing happens and no whiteout is made. Errors are <see cref="Rename"/>'s and leave everything as it was.
    /// </summary>
    public Errno RenameWhiteout(long parent, string name, long newParent, string newName, bool noReplace, uint uid, uint gid)
    {
        lock (_lock)
        {
            var e = Rename(parent, name, newParent, newName, noReplace ? FileSystem.RenameFlags.NoReplace : FileSystem.RenameFlags.None);
            if (e != 0) return e;
            var src = Live(parent) ?? throw new InvalidOperationException($"directory {parent} vanished during a rename");
            if (DirOf(src).ByName.ContainsKey(name)) return 0;   // one inode under both names: nothing was moved
            e = MakeNode(parent, name, S_IFCHR, 0, uid, gid, null, out _);
            // Everything MakeNode checks held a moment ago under this same lock (a live directory, a free name).
            if (e != 0) throw new InvalidOperationException($"whiteout of '{name}' in {parent} failed after its rename: {e}");
            return 0;
        }
    }
}
