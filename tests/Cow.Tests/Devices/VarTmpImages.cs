namespace Cow.Tests.Devices;

/// <summary>A fresh folder under /var/tmp for a test class's image files (O_DIRECT works there, unlike on a
/// tmpfs /tmp), removed after each test. Not thread-safe.</summary>
public abstract class VarTmpImages : IDisposable
{
    protected const int MiB = 1 << 20;
    protected readonly string Dir;

    protected VarTmpImages(string prefix)
    {
        Dir = Path.Combine("/var/tmp", prefix + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Dir);
    }

    public void Dispose()
    {
        Directory.Delete(Dir, recursive: true);
        GC.SuppressFinalize(this);
    }
}
