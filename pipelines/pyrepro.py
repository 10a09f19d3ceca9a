"""The reproducibility shim for componentize-py builds: a small C library preloaded into the build child.

componentize-py pre-initialises a Python agent by running CPython inside wasmtime and snapshotting its
memory into the component, so everything the guest reads from the host during that run lands in the
artifact. Measured here (componentize-py 0.25.1): the interpreter's hash seed and `random` state (host
randomness), wall and monotonic clock readings, directory listing order, file times and inode numbers
(the guest's `st_ino` is a hash of the host's device and inode) each made two builds of the same
sources differ, in size too. The shim makes all of them constants (see the C source below); with it,
two clones at different paths give byte-identical components. Some of those reads bypass libc (wasmtime's
file system layer makes raw system calls), so the stat family is caught with a seccomp trap whose handler
answers for files under the build folder only (the dynamic loader tells libraries apart by inode).

It exists only for x86_64 Linux with glibc (the machine code of the trap handler is x86_64); elsewhere
`shim()` says why it is unavailable, the build is not reproducible, and provenance records that. It is
compiled once per source and zig version with the pinned `zig cc` into the toolchain cache.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
import tempfile
from pathlib import Path

from agentfactory.fsutil import atomic_write

SOURCE = r"""/* Agent Factory: make a componentize-py build reproducible (LD_PRELOAD into the build child only).
 *
 * componentize-py pre-initialises the agent by running CPython inside wasmtime and snapshotting its
 * memory; everything the guest reads from the host then lands in the artifact. This library makes
 * every such read the same on every machine and in every clone:
 *   - randomness: each request gets the same bytes (the interpreter's hash seed, random's state and
 *     the host's own HashMap keys become constants; with --stub-wasi they are baked in anyway);
 *   - clocks: the wall clock reads SOURCE_DATE_EPOCH and the monotonic clock one second, always;
 *   - directory listings come in name order, not the file system's;
 *   - stat of anything under the build folder (AGENTFACTORY_REPRO_ROOT) says the epoch for every time
 *     and 1 for inode and device (the guest's st_ino is a hash of them). The stat family is caught with
 *     a seccomp trap, because wasmtime's file system layer makes some of these calls without libc.
 * Not for any other use: it lies to the process about time, randomness and files.
 */
#define _GNU_SOURCE
#define _LARGEFILE64_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

static long long epoch = 0;
static char root[4096];
static size_t root_len = 0;

/* --- randomness ------------------------------------------------------------------------------ */
static void fill(void *buf, size_t n) {
    unsigned char *p = buf;
    uint64_t state = 0x243f6a8885a308d3ULL;
    while (n) {
        uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        size_t k = n < 8 ? n : 8;
        memcpy(p, &z, k);
        p += k;
        n -= k;
    }
}
ssize_t getrandom(void *buf, size_t n, unsigned int flags) { (void)flags; fill(buf, n); return (ssize_t)n; }
int getentropy(void *buf, size_t n) { if (n > 256) { errno = EIO; return -1; } fill(buf, n); return 0; }

typedef long (*syscall_fn)(long, ...);
long syscall(long n, ...) {
    va_list ap;
    va_start(ap, n);
    long a[6];
    for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    if (n == SYS_getrandom) { fill((void *)a[0], (size_t)a[1]); return a[1]; }
    static syscall_fn real = 0;
    if (!real) real = (syscall_fn)dlsym(RTLD_NEXT, "syscall");
    return real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
}

/* --- clocks ---------------------------------------------------------------------------------- */
typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);
int clock_gettime(clockid_t id, struct timespec *ts) {
    if (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE) { ts->tv_sec = epoch; ts->tv_nsec = 0; return 0; }
    if (id == CLOCK_MONOTONIC || id == CLOCK_MONOTONIC_RAW || id == CLOCK_MONOTONIC_COARSE || id == CLOCK_BOOTTIME) {
        ts->tv_sec = 1; ts->tv_nsec = 0; return 0;
    }
    static clock_gettime_fn real = 0;
    if (!real) real = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
    return real(id, ts);
}
int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
    (void)tz;
    struct timeval *volatile out = tv;
    if (out) { out->tv_sec = epoch; out->tv_usec = 0; }
    return 0;
}
time_t time(time_t *t) { if (t) *t = epoch; return epoch; }

/* --- directory listings in name order --------------------------------------------------------- */
typedef struct dirent64 *(*readdir64_fn)(DIR *);
typedef void (*rewinddir_fn)(DIR *);
typedef int (*closedir_fn)(DIR *);
struct listing { DIR *dir; struct dirent64 *ents; size_t n, next; int loaded; };
#define MAX_OPEN_DIRS 1024
static struct listing listings[MAX_OPEN_DIRS];
static pthread_mutex_t listings_lock = PTHREAD_MUTEX_INITIALIZER;
static int by_name(const void *a, const void *b) {
    return strcmp(((const struct dirent64 *)a)->d_name, ((const struct dirent64 *)b)->d_name);
}
static struct listing *listing_of(DIR *d, int create) {
    for (int i = 0; i < MAX_OPEN_DIRS; i++) if (listings[i].dir == d) return &listings[i];
    if (!create) return 0;
    for (int i = 0; i < MAX_OPEN_DIRS; i++)
        if (!listings[i].dir) { memset(&listings[i], 0, sizeof listings[i]); listings[i].dir = d; return &listings[i]; }
    write(2, "reproducibility shim: too many open directories\n", 48);
    abort();
}
static void forget(DIR *d) {
    pthread_mutex_lock(&listings_lock);
    struct listing *l = listing_of(d, 0);
    if (l) { free(l->ents); memset(l, 0, sizeof *l); }
    pthread_mutex_unlock(&listings_lock);
}
struct dirent64 *readdir64(DIR *d) {
    static readdir64_fn real = 0;
    if (!real) real = (readdir64_fn)dlsym(RTLD_NEXT, "readdir64");
    pthread_mutex_lock(&listings_lock);
    struct listing *l = listing_of(d, 1);
    if (!l->loaded) {
        size_t cap = 64;
        l->ents = malloc(cap * sizeof *l->ents);
        int saved = errno;
        struct dirent64 *e;
        while (l->ents && (e = real(d))) {
            if (l->n == cap) { cap *= 2; l->ents = realloc(l->ents, cap * sizeof *l->ents); if (!l->ents) break; }
            memcpy(&l->ents[l->n], e, sizeof *e);
            l->ents[l->n].d_ino = 1;
            l->ents[l->n].d_off = 0;
            l->n++;
        }
        if (!l->ents) { write(2, "reproducibility shim: out of memory\n", 36); abort(); }
        errno = saved;
        qsort(l->ents, l->n, sizeof *l->ents, by_name);
        l->loaded = 1;
    }
    struct dirent64 *out = l->next < l->n ? &l->ents[l->next++] : 0;
    pthread_mutex_unlock(&listings_lock);
    return out;
}
struct dirent *readdir(DIR *d) { return (struct dirent *)readdir64(d); }
void rewinddir(DIR *d) {
    static rewinddir_fn real = 0;
    if (!real) real = (rewinddir_fn)dlsym(RTLD_NEXT, "rewinddir");
    forget(d);
    real(d);
}
int closedir(DIR *d) {
    static closedir_fn real = 0;
    if (!real) real = (closedir_fn)dlsym(RTLD_NEXT, "closedir");
    forget(d);
    return real(d);
}

/* --- stat of the build folder, through a seccomp trap ----------------------------------------- */
#define MAGIC 0x41465f5245505230LL /* the handler's own calls carry it as their sixth argument */
static long raw6(long n, long a, long b, long c, long d, long e) {
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = MAGIC;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
static int under_root(const char *p) {
    return root_len && strncmp(p, root, root_len) == 0 && (p[root_len] == '/' || p[root_len] == 0);
}
static int fd_under_root(long fd_raw) {
    char link[64], target[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", (int)fd_raw);
    long n = raw6(SYS_readlink, (long)link, (long)target, sizeof target - 1, 0, 0);
    if (n <= 0) return 0;
    target[n] = 0;
    return under_root(target);
}
static int names_root(long dirfd_raw, const char *path) {
    int dirfd = (int)dirfd_raw;
    if (!path || !path[0]) return fd_under_root(dirfd);
    if (path[0] == '/') return under_root(path);
    if (dirfd == AT_FDCWD) {
        char cwd[4096];
        if (raw6(SYS_getcwd, (long)cwd, sizeof cwd, 0, 0, 0) <= 0) return 0;
        return under_root(cwd);
    }
    return fd_under_root(dirfd);
}
static void fix_stat(struct stat64 *st) {
    st->st_atim.tv_sec = st->st_mtim.tv_sec = st->st_ctim.tv_sec = epoch;
    st->st_atim.tv_nsec = st->st_mtim.tv_nsec = st->st_ctim.tv_nsec = 0;
    st->st_ino = 1;
    st->st_dev = 1;
}
static void fix_statx(struct statx *sx) {
    sx->stx_atime.tv_sec = sx->stx_mtime.tv_sec = sx->stx_ctime.tv_sec = sx->stx_btime.tv_sec = epoch;
    sx->stx_atime.tv_nsec = sx->stx_mtime.tv_nsec = sx->stx_ctime.tv_nsec = sx->stx_btime.tv_nsec = 0;
    sx->stx_ino = 1;
    sx->stx_dev_major = 0;
    sx->stx_dev_minor = 1;
}
static void on_sigsys(int sig, siginfo_t *info, void *vctx) {
    (void)sig;
    greg_t *g = ((ucontext_t *)vctx)->uc_mcontext.gregs;
    long n = info->si_syscall;
    long r = raw6(n, g[REG_RDI], g[REG_RSI], g[REG_RDX], g[REG_R10], g[REG_R8]);
    if (r == 0) {
        if (n == SYS_statx) {
            if (names_root(g[REG_RDI], (const char *)g[REG_RSI])) fix_statx((struct statx *)g[REG_R8]);
        } else if (n == SYS_newfstatat) {
            if (names_root(g[REG_RDI], (const char *)g[REG_RSI])) fix_stat((struct stat64 *)g[REG_RDX]);
        } else if (n == SYS_fstat) {
            if (fd_under_root(g[REG_RDI])) fix_stat((struct stat64 *)g[REG_RSI]);
        } else if (names_root(AT_FDCWD, (const char *)g[REG_RDI])) {
            fix_stat((struct stat64 *)g[REG_RSI]); /* stat, lstat */
        }
    }
    g[REG_RAX] = r;
}
__attribute__((constructor)) static void install(void) {
    const char *e = getenv("AGENTFACTORY_REPRO_EPOCH"), *r = getenv("AGENTFACTORY_REPRO_ROOT");
    if (!e || !r || !r[0] || strlen(r) >= sizeof root) {
        write(2, "reproducibility shim: AGENTFACTORY_REPRO_EPOCH and AGENTFACTORY_REPRO_ROOT must be set\n", 86);
        _exit(97);
    }
    epoch = atoll(e);
    strcpy(root, r);
    root_len = strlen(root);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigsys;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_statx, 5, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_newfstatat, 4, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_fstat, 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_stat, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_lstat, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[5])),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned int)(MAGIC & 0xffffffff), 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[5]) + 4),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned int)(MAGIC >> 32), 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    if (sigaction(SIGSYS, &sa, 0) != 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        write(2, "reproducibility shim: cannot install the seccomp filter\n", 56);
        _exit(97);
    }
}
"""
SOURCE_SHA256 = hashlib.sha256(SOURCE.encode()).hexdigest()
EXIT_UNAVAILABLE = 97  # the shim's exit code when it cannot install itself (no seccomp here, no settings)
FLAGS = ("-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-target", "x86_64-linux-gnu.2.17")
COMPILE_TIMEOUT_S = 300


class ShimUnavailable(Exception):
    """This machine cannot build or use the shim; the message says why (recorded in provenance)."""


def supported() -> str | None:
    """None when the shim can run here, else why not."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"the reproducibility shim runs on x86_64 Linux only, not {platform.system()} {platform.machine()}"
    libc, _ = platform.libc_ver()
    if libc != "glibc":
        return f"the reproducibility shim needs glibc (this machine's C library: {libc or 'unknown'})"
    return None


def shim(cache_root: Path, zig: Path) -> Path:
    """The shim library, compiled on first use; ShimUnavailable when this machine cannot have it."""
    why = supported()
    if why:
        raise ShimUnavailable(why)
    target = cache_root / "repro-shim" / SOURCE_SHA256[:16] / "libafrepro.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shim-", dir=target.parent) as scratch:
        c = Path(scratch) / "afrepro.c"
        c.write_text(SOURCE, encoding="utf-8")
        out = Path(scratch) / "libafrepro.so"
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": scratch,
               "ZIG_GLOBAL_CACHE_DIR": str(cache_root / "zig-global"), "ZIG_LOCAL_CACHE_DIR": scratch}
        try:
            proc = subprocess.run([str(zig), "cc", *FLAGS, "-o", str(out), str(c), "-ldl"], capture_output=True,
                                  text=True, env=env, timeout=COMPILE_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ShimUnavailable(f"cannot compile the reproducibility shim: {exc}") from None
        if proc.returncode != 0:
            raise ShimUnavailable(f"cannot compile the reproducibility shim: {(proc.stderr or proc.stdout)[-2000:]}")
        atomic_write(target, out.read_bytes(), mode=0o755)
    return target


def environment(library: Path, epoch: int, root: Path) -> dict[str, str]:
    """What the build child needs in its environment for the shim: the library, the epoch, the build folder."""
    return {"LD_PRELOAD": str(library), "AGENTFACTORY_REPRO_EPOCH": str(epoch),
            "AGENTFACTORY_REPRO_ROOT": str(root.resolve())}


__all__ = ["SOURCE_SHA256", "ShimUnavailable", "environment", "shim", "supported"]
