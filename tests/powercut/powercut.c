/*
 * powercut.so: an LD_PRELOAD library that makes a power cut reproducible without FUSE.
 *
 *   gcc -shared -fPIC -O2 -o powercut.so powercut.c -ldl -lpthread
 *   POWERCUT_DIR=<abs dir> POWERCUT_JOURNAL=<file> LD_PRELOAD=./powercut.so <program>
 *
 * WHAT IT DOES
 * Every data-changing call on a regular file under POWERCUT_DIR (write, pwrite, writev,
 * pwritev, ftruncate, fallocate, posix_fallocate, truncate, open with O_TRUNC) first appends
 * the *pre-image* of what it is about to change to an append-only journal: the file's
 * (dev, inode), the offset, the file size before the call and the old bytes of the range
 * it overwrites (bytes past the old end of file are an extension: no bytes, only the old
 * size). Then the call runs. A successful fsync/fdatasync of a tracked file appends a
 * "synced" record: every record of that file journaled before the fsync *started* is
 * durable. sync()/syncfs() append a "synced everything" record; a write through an
 * O_SYNC/O_DSYNC descriptor is followed by its own "synced" record. sync_file_range is
 * NOT a durability point (it starts/waits for writeback of data pages but flushes neither
 * metadata nor the disk's write cache; POSIX promises nothing): it is journaled only as a
 * diagnostic record. That is exactly the bug class under test: sled 0.34 syncs its log with
 * sync_file_range and never syncs its blob files.
 *
 * A CUT (done by the test, tests/powercut/undo.js): SIGSTOP the process (nothing more is
 * acknowledged: a stop takes effect on the way back to user space), SIGKILL it (a fatal
 * signal can end a large journal append early: the torn last record is dropped, its own
 * write had not started), then for every file undo, newest first, each
 * journaled change made after that file's last "synced" record: write the pre-image back
 * and truncate to the old size. The result is each file exactly as it was at its last
 * fsync: every write that was not fsynced is dropped.
 *
 * WHY THIS EQUALS LAZYFS'S clear-cache FOR THIS STORE
 * LazyFS (the FUSE file system Jepsen uses) keeps every write in its own page cache until
 * the file is fsynced; `lazyfs::clear-cache` throws away those unsynced pages, so each file
 * reverts to its content and size at its last fsync. Metadata operations (create, mkdir,
 * rename, unlink, link) go straight through to the backing file system in LazyFS, and they
 * pass straight through here too: a file created and never fsynced survives the cut, empty
 * (its size at the last sync, 0). Both models are per-file: fsync of one file does not
 * make another durable, and neither models the loss of a directory entry (a missing
 * directory fsync) or torn sectors. We drop at byte granularity where LazyFS drops whole
 * cached pages; for a file whose unsynced writes never share a page with synced data the
 * outcome is the same, and where they do, ours keeps the synced bytes of that page, which
 * is the outcome a real disk gives too (it never un-writes a sector it acknowledged).
 * Writes made without this library (the checker process that reopens the store between
 * cuts) are treated as durable.
 *
 * WHAT IS NOT SEEN: stdio (fwrite goes to glibc's internal write, not through the PLT),
 * mmap'ed writes, raw syscall(2), io_uring, copy_file_range/sendfile/splice. sled 0.34 (as
 * durably builds it, without its io_uring feature) uses none of these. The addon imports
 * only these file calls from libc (nm -D --undefined-only): open, open64, openat64, write,
 * writev, pwrite64, ftruncate64, fsync, fdatasync, sync_file_range, rename, unlink,
 * unlinkat, close. `strace -f -y` of the powercut worker, on files in the data folder:
 *   openat db O_RDWR|O_CREAT (sled's log), openat db O_RDONLY (durably's fdatasync handle),
 *   openat conf O_WRONLY|O_CREAT + write (never synced), openat blobs/<n>
 *   O_WRONLY|O_CREAT|O_EXCL + 3 write each (never synced), pwrite64 db + sync_file_range db
 *   (one pair per log write), fdatasync db (durably, once per group commit), unlink
 *   blobs/<n> (sled's GC), fsync db (sled, on close), flock db.
 * Descriptors are classified by readlink(/proc/self/fd/N), so a dup'ed descriptor or one
 * opened before the library was loaded is still tracked.
 *
 * JOURNAL FORMAT (little-endian, x86_64): records of a 64-byte header followed by `len`
 * bytes: u32 magic 0x52544350 ("PCTR"), u32 type, u64 seq, u64 dev, u64 ino, u64 off,
 * u64 old_size, u64 len, u64 aux. Types:
 *   'W' write, 'T' truncate (also O_TRUNC), 'F' fallocate: len bytes of pre-image at off;
 *       old_size = size before; aux = bytes the call asked to write / the new size / mode.
 *   'S' fsync/fdatasync succeeded: records of (dev, ino) with seq < aux are durable.
 *   'A' sync/syncfs succeeded: records of every file with seq < aux are durable.
 *   'G' unlinked or replaced by a rename: records of (dev, ino) before this are void.
 *   'O' a tracked descriptor was seen: len bytes of its path (diagnostics only).
 *   'R' sync_file_range (diagnostics only: no durability).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef FALLOC_FL_KEEP_SIZE
#define FALLOC_FL_KEEP_SIZE 0x01
#endif
#ifndef FALLOC_FL_PUNCH_HOLE
#define FALLOC_FL_PUNCH_HOLE 0x02
#endif
#ifndef FALLOC_FL_COLLAPSE_RANGE
#define FALLOC_FL_COLLAPSE_RANGE 0x08
#endif
#ifndef FALLOC_FL_ZERO_RANGE
#define FALLOC_FL_ZERO_RANGE 0x10
#endif
#ifndef FALLOC_FL_INSERT_RANGE
#define FALLOC_FL_INSERT_RANGE 0x20
#endif

#define MAGIC 0x52544350u
#define MAX_FDS 65536

/* ---------- the real functions ---------- */

#define REAL(name)                                                                  \
  ({                                                                                \
    if (!real_##name) real_##name = (__typeof__(real_##name))dlsym(RTLD_NEXT, #name); \
    real_##name;                                                                    \
  })

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real___open_2)(const char *, int);
static int (*real___open64_2)(const char *, int);
static int (*real___openat_2)(int, const char *, int);
static int (*real___openat64_2)(int, const char *, int);
static int (*real_creat)(const char *, mode_t);
static int (*real_creat64)(const char *, mode_t);
static int (*real_close)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off64_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static ssize_t (*real_pwritev64)(int, const struct iovec *, int, off64_t);
static ssize_t (*real_pwritev2)(int, const struct iovec *, int, off_t, int);
static ssize_t (*real_pwritev64v2)(int, const struct iovec *, int, off64_t, int);
static int (*real_ftruncate64)(int, off64_t);
static int (*real_truncate64)(const char *, off64_t);
static int (*real_fallocate64)(int, int, off64_t, off64_t);
static int (*real_posix_fallocate64)(int, off64_t, off64_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_sync_file_range)(int, off64_t, off64_t, unsigned int);
static void (*real_sync)(void);
static int (*real_syncfs)(int);
static int (*real_unlink)(const char *);
static int (*real_unlinkat)(int, const char *, int);
static int (*real_rename)(const char *, const char *);
static int (*real_renameat)(int, const char *, int, const char *);
static int (*real_renameat2)(int, const char *, int, const char *, unsigned int);

/* ---------- state ---------- */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char dir[PATH_MAX];  /* POWERCUT_DIR, canonical, without a trailing slash */
static size_t dir_len;
static int enabled;
static int journal_fd = -1;
static uint64_t seq;
/* Set while this thread is inside the shim: a signal handler that writes then (libuv's
 * handlers write to a pipe) goes straight through instead of deadlocking on `mu`. */
static __thread int in_shim;

enum { FD_UNKNOWN = 0, FD_UNTRACKED = 1, FD_TRACKED = 2 };
struct fdinfo {
  unsigned char state;
  unsigned char osync;
  unsigned char append;
  dev_t dev;
  ino_t ino;
};
static struct fdinfo fds[MAX_FDS];

__attribute__((constructor)) static void powercut_init(void) {
  const char *d = getenv("POWERCUT_DIR");
  const char *j = getenv("POWERCUT_JOURNAL");
  if (!d || !*d || !j || !*j) return;
  char buf[PATH_MAX];
  if (!realpath(d, buf)) {
    /* The folder may not exist yet: use it as given (the test passes a canonical path). */
    snprintf(buf, sizeof buf, "%s", d);
  }
  dir_len = strlen(buf);
  while (dir_len > 1 && buf[dir_len - 1] == '/') buf[--dir_len] = 0;
  memcpy(dir, buf, dir_len + 1);
  journal_fd = REAL(open)(j, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (journal_fd < 0) {
    fprintf(stderr, "powercut: cannot open the journal %s: %s\n", j, strerror(errno));
    abort();
  }
  enabled = 1;
}

static void die(const char *what) {
  fprintf(stderr, "powercut: %s: %s\n", what, strerror(errno));
  abort(); /* a journal we cannot trust must not let a test pass */
}

/* Appends one record (header + body) with the real write; caller holds `mu`. */
static uint64_t journal(uint32_t type, dev_t dev, ino_t ino, uint64_t off, uint64_t old_size,
                        const void *body, uint64_t len, uint64_t aux) {
  struct {
    uint32_t magic, type;
    uint64_t seq, dev, ino, off, old_size, len, aux;
  } h = {MAGIC, type, seq, (uint64_t)dev, (uint64_t)ino, off, old_size, len, aux};
  _Static_assert(sizeof h == 64, "header is 64 bytes");
  uint64_t my = seq++;
  struct iovec iov[2] = {{&h, sizeof h}, {(void *)body, len}};
  int n = len ? 2 : 1;
  size_t left = sizeof h + len;
  while (left > 0) {
    ssize_t w = REAL(writev)(journal_fd, iov, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      die("journal write");
    }
    left -= (size_t)w;
    /* advance the iovecs past what was written */
    size_t adv = (size_t)w;
    for (int i = 0; i < n && adv > 0; i++) {
      size_t take = adv < iov[i].iov_len ? adv : iov[i].iov_len;
      iov[i].iov_base = (char *)iov[i].iov_base + take;
      iov[i].iov_len -= take;
      adv -= take;
    }
  }
  return my;
}

static int under_dir(const char *p) {
  return strncmp(p, dir, dir_len) == 0 && (p[dir_len] == '/' || p[dir_len] == 0);
}

/* Classifies fd (caller holds `mu`); returns its entry (a static scratch one past MAX_FDS). */
static struct fdinfo *classify(int fd) {
  static struct fdinfo scratch;
  struct fdinfo *e = (fd >= 0 && fd < MAX_FDS) ? &fds[fd] : &scratch;
  if (e != &scratch && e->state != FD_UNKNOWN) return e;
  memset(e, 0, sizeof *e);
  e->state = FD_UNTRACKED;
  if (fd < 0) return e;
  char link[64], path[PATH_MAX];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof path - 1);
  if (n <= 0) return e;
  path[n] = 0;
  if (!under_dir(path)) return e;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return e;
  int fl = fcntl(fd, F_GETFL);
  e->state = FD_TRACKED;
  e->dev = st.st_dev;
  e->ino = st.st_ino;
  e->osync = fl >= 0 && (fl & (O_SYNC | O_DSYNC)) != 0;
  e->append = fl >= 0 && (fl & O_APPEND) != 0;
  journal('O', st.st_dev, st.st_ino, 0, (uint64_t)st.st_size, path, (uint64_t)n, 0);
  return e;
}

static void forget(int fd) {
  if (fd >= 0 && fd < MAX_FDS) fds[fd].state = FD_UNKNOWN;
}

/* Journals the pre-image of [off, off+len) (clipped to the current size); holds `mu`. */
static void preimage(uint32_t type, int fd, struct fdinfo *e, uint64_t off, uint64_t len,
                     uint64_t aux) {
  struct stat st;
  if (fstat(fd, &st) != 0) die("fstat");
  uint64_t size = (uint64_t)st.st_size;
  uint64_t end = off + len;
  if (end > size) end = size;
  uint64_t n = end > off ? end - off : 0;
  char *buf = NULL;
  if (n) {
    buf = malloc(n);
    if (!buf) die("malloc");
    uint64_t got = 0;
    while (got < n) {
      ssize_t r = pread(fd, buf + got, n - got, (off_t)(off + got));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) die("pread of the pre-image (is the descriptor write-only? open it O_RDWR)");
      got += (uint64_t)r;
    }
  }
  journal(type, e->dev, e->ino, off, size, buf, n, aux);
  free(buf);
}

/* Pre-images need read access: a descriptor opened write-only is read through a second
 * descriptor opened on /proc/self/fd/N. */
static void preimage_any(uint32_t type, int fd, struct fdinfo *e, uint64_t off, uint64_t len,
                         uint64_t aux) {
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0 && (fl & O_ACCMODE) == O_WRONLY) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    int rfd = REAL(open)(link, O_RDONLY | O_CLOEXEC);
    if (rfd < 0) die("reopen for reading");
    preimage(type, rfd, e, off, len, aux);
    REAL(close)(rfd);
  } else {
    preimage(type, fd, e, off, len, aux);
  }
}

static uint64_t cur_offset(int fd, struct fdinfo *e) {
  if (e->append) {
    struct stat st;
    if (fstat(fd, &st) != 0) die("fstat");
    return (uint64_t)st.st_size;
  }
  off_t o = lseek(fd, 0, SEEK_CUR);
  return o < 0 ? 0 : (uint64_t)o;
}

static size_t iov_total(const struct iovec *iov, int cnt) {
  size_t t = 0;
  for (int i = 0; i < cnt; i++) t += iov[i].iov_len;
  return t;
}

/* ---------- writes ---------- */

/* Runs `call` for fd: untracked ones straight through; tracked ones under `mu` after
 * journaling the pre-image of [off, off+len) (off < 0: at the current file offset). */
#define WRITE_CALL(fd, off, len, call)                                     \
  do {                                                                    \
    if (!enabled || in_shim) return (call);                               \
    pthread_mutex_lock(&mu);                                              \
    in_shim = 1;                                                          \
    struct fdinfo *e = classify(fd);                                      \
    if (e->state != FD_TRACKED) {                                         \
      in_shim = 0;                                                        \
      pthread_mutex_unlock(&mu);                                          \
      return (call);                                                      \
    }                                                                     \
    int64_t o_ = (off);                                                   \
    uint64_t at = o_ < 0 ? cur_offset(fd, e) : (uint64_t)o_;              \
    preimage_any('W', fd, e, at, (uint64_t)(len), (uint64_t)(len));       \
    ssize_t r_ = (call);                                                  \
    int saved = errno;                                                    \
    if (r_ > 0 && e->osync) journal('S', e->dev, e->ino, 0, 0, NULL, 0, seq); \
    in_shim = 0;                                                          \
    pthread_mutex_unlock(&mu);                                            \
    errno = saved;                                                        \
    return r_;                                                            \
  } while (0)

ssize_t write(int fd, const void *b, size_t n) { WRITE_CALL(fd, -1, n, REAL(write)(fd, b, n)); }
ssize_t pwrite(int fd, const void *b, size_t n, off_t o) {
  WRITE_CALL(fd, o, n, REAL(pwrite)(fd, b, n, o));
}
ssize_t pwrite64(int fd, const void *b, size_t n, off64_t o) {
  WRITE_CALL(fd, o, n, REAL(pwrite64)(fd, b, n, o));
}
ssize_t writev(int fd, const struct iovec *v, int c) {
  WRITE_CALL(fd, -1, iov_total(v, c), REAL(writev)(fd, v, c));
}
ssize_t pwritev(int fd, const struct iovec *v, int c, off_t o) {
  WRITE_CALL(fd, o, iov_total(v, c), REAL(pwritev)(fd, v, c, o));
}
ssize_t pwritev64(int fd, const struct iovec *v, int c, off64_t o) {
  WRITE_CALL(fd, o, iov_total(v, c), REAL(pwritev64)(fd, v, c, o));
}
ssize_t pwritev2(int fd, const struct iovec *v, int c, off_t o, int f) {
  WRITE_CALL(fd, o, iov_total(v, c), REAL(pwritev2)(fd, v, c, o, f));
}
ssize_t pwritev64v2(int fd, const struct iovec *v, int c, off64_t o, int f) {
  WRITE_CALL(fd, o, iov_total(v, c), REAL(pwritev64v2)(fd, v, c, o, f));
}

/* ---------- size changes ---------- */

static int do_ftruncate(int fd, uint64_t len, int (*call)(int, off64_t)) {
  if (!enabled) return call(fd, (off64_t)len);
  pthread_mutex_lock(&mu);
  struct fdinfo *e = classify(fd);
  if (e->state == FD_TRACKED) preimage_any('T', fd, e, len, UINT64_MAX - len, len);
  int r = call(fd, (off64_t)len);
  int saved = errno;
  pthread_mutex_unlock(&mu);
  errno = saved;
  return r;
}
static int ftrunc_real(int fd, off64_t l) { return REAL(ftruncate64)(fd, l); }
int ftruncate(int fd, off_t l) { return do_ftruncate(fd, (uint64_t)l, ftrunc_real); }
int ftruncate64(int fd, off64_t l) { return do_ftruncate(fd, (uint64_t)l, ftrunc_real); }

static int path_truncate(const char *p, uint64_t len) {
  if (enabled) {
    int fd = REAL(open)(p, O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
      forget(fd);
      int r = do_ftruncate(fd, len, ftrunc_real);
      int saved = errno;
      forget(fd);
      REAL(close)(fd);
      errno = saved;
      return r;
    }
  }
  return REAL(truncate64)(p, (off64_t)len);
}
int truncate(const char *p, off_t l) { return path_truncate(p, (uint64_t)l); }
int truncate64(const char *p, off64_t l) { return path_truncate(p, (uint64_t)l); }

static int do_fallocate(int fd, int mode, uint64_t off, uint64_t len, int posix) {
  int r;
  if (!enabled) goto passthrough;
  pthread_mutex_lock(&mu);
  struct fdinfo *e = classify(fd);
  if (e->state == FD_TRACKED) {
    /* Plain allocation keeps existing bytes (only the size may grow); punching, zeroing,
     * collapsing or inserting changes bytes: keep their pre-image. */
    uint64_t span = 0;
    if (mode & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE)) span = UINT64_MAX - off;
    else if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) span = len;
    preimage_any('F', fd, e, off, span, (uint64_t)mode);
  }
  if (posix) r = REAL(posix_fallocate64)(fd, (off64_t)off, (off64_t)len);
  else r = REAL(fallocate64)(fd, mode, (off64_t)off, (off64_t)len);
  int saved = errno;
  pthread_mutex_unlock(&mu);
  errno = saved;
  return r;
passthrough:
  if (posix) return REAL(posix_fallocate64)(fd, (off64_t)off, (off64_t)len);
  return REAL(fallocate64)(fd, mode, (off64_t)off, (off64_t)len);
}
int fallocate(int fd, int m, off_t o, off_t l) { return do_fallocate(fd, m, o, l, 0); }
int fallocate64(int fd, int m, off64_t o, off64_t l) { return do_fallocate(fd, m, o, l, 0); }
int posix_fallocate(int fd, off_t o, off_t l) { return do_fallocate(fd, 0, o, l, 1); }
int posix_fallocate64(int fd, off64_t o, off64_t l) { return do_fallocate(fd, 0, o, l, 1); }

/* ---------- durability points ---------- */

static int do_sync(int fd, int (*call)(int)) {
  if (!enabled) return call(fd);
  pthread_mutex_lock(&mu);
  struct fdinfo *e = classify(fd);
  int tracked = e->state == FD_TRACKED;
  dev_t dev = e->dev;
  ino_t ino = e->ino;
  uint64_t upto = seq; /* only what was written before the sync started is covered */
  pthread_mutex_unlock(&mu);
  int r = call(fd);
  if (r == 0 && tracked) {
    int saved = errno;
    pthread_mutex_lock(&mu);
    journal('S', dev, ino, 0, 0, NULL, 0, upto);
    pthread_mutex_unlock(&mu);
    errno = saved;
  }
  return r;
}
int fsync(int fd) { return do_sync(fd, REAL(fsync)); }
int fdatasync(int fd) { return do_sync(fd, REAL(fdatasync)); }

int sync_file_range(int fd, off64_t off, off64_t n, unsigned int flags) {
  int r = REAL(sync_file_range)(fd, off, n, flags);
  if (enabled) {
    int saved = errno;
    pthread_mutex_lock(&mu);
    struct fdinfo *e = classify(fd);
    if (e->state == FD_TRACKED) journal('R', e->dev, e->ino, (uint64_t)off, 0, NULL, 0, (uint64_t)n);
    pthread_mutex_unlock(&mu);
    errno = saved;
  }
  return r;
}

void sync(void) {
  uint64_t upto = 0;
  if (enabled) {
    pthread_mutex_lock(&mu);
    upto = seq;
    pthread_mutex_unlock(&mu);
  }
  REAL(sync)();
  if (enabled) {
    pthread_mutex_lock(&mu);
    journal('A', 0, 0, 0, 0, NULL, 0, upto);
    pthread_mutex_unlock(&mu);
  }
}
int syncfs(int fd) {
  uint64_t upto = 0;
  if (enabled) {
    pthread_mutex_lock(&mu);
    upto = seq;
    pthread_mutex_unlock(&mu);
  }
  int r = REAL(syncfs)(fd);
  if (enabled && r == 0) {
    int saved = errno;
    pthread_mutex_lock(&mu);
    journal('A', 0, 0, 0, 0, NULL, 0, upto);
    pthread_mutex_unlock(&mu);
    errno = saved;
  }
  return r;
}

/* ---------- descriptors ---------- */

/* O_TRUNC on an existing tracked file changes data: journal its pre-image first. */
static void before_open(int dirfd, const char *p, int flags) {
  if (!enabled || !(flags & O_TRUNC) || (flags & O_ACCMODE) == O_RDONLY) return;
  int fd = REAL(openat)(dirfd, p, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  pthread_mutex_lock(&mu);
  forget(fd);
  struct fdinfo *e = classify(fd);
  if (e->state == FD_TRACKED) preimage('T', fd, e, 0, UINT64_MAX, 0);
  forget(fd);
  pthread_mutex_unlock(&mu);
  REAL(close)(fd);
}

static int after_open(int fd) {
  if (enabled && fd >= 0) {
    int saved = errno;
    pthread_mutex_lock(&mu);
    forget(fd);
    classify(fd);
    pthread_mutex_unlock(&mu);
    errno = saved;
  }
  return fd;
}

static mode_t mode_arg(int flags, va_list ap) {
  return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *p, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t m = mode_arg(flags, ap);
  va_end(ap);
  before_open(AT_FDCWD, p, flags);
  return after_open(REAL(open)(p, flags, m));
}
int open64(const char *p, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t m = mode_arg(flags, ap);
  va_end(ap);
  before_open(AT_FDCWD, p, flags);
  return after_open(REAL(open64)(p, flags, m));
}
int openat(int d, const char *p, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t m = mode_arg(flags, ap);
  va_end(ap);
  before_open(d, p, flags);
  return after_open(REAL(openat)(d, p, flags, m));
}
int openat64(int d, const char *p, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t m = mode_arg(flags, ap);
  va_end(ap);
  before_open(d, p, flags);
  return after_open(REAL(openat64)(d, p, flags, m));
}
int __open_2(const char *p, int flags) {
  before_open(AT_FDCWD, p, flags);
  return after_open(REAL(__open_2)(p, flags));
}
int __open64_2(const char *p, int flags) {
  before_open(AT_FDCWD, p, flags);
  return after_open(REAL(__open64_2)(p, flags));
}
int __openat_2(int d, const char *p, int flags) {
  before_open(d, p, flags);
  return after_open(REAL(__openat_2)(d, p, flags));
}
int __openat64_2(int d, const char *p, int flags) {
  before_open(d, p, flags);
  return after_open(REAL(__openat64_2)(d, p, flags));
}
int creat(const char *p, mode_t m) {
  before_open(AT_FDCWD, p, O_WRONLY | O_TRUNC);
  return after_open(REAL(creat)(p, m));
}
int creat64(const char *p, mode_t m) {
  before_open(AT_FDCWD, p, O_WRONLY | O_TRUNC);
  return after_open(REAL(creat64)(p, m));
}

int close(int fd) {
  if (enabled && fd >= 0 && fd < MAX_FDS) {
    pthread_mutex_lock(&mu);
    forget(fd);
    pthread_mutex_unlock(&mu);
  }
  return REAL(close)(fd);
}
int dup2(int a, int b) {
  int r = REAL(dup2)(a, b);
  if (enabled && r >= 0) {
    pthread_mutex_lock(&mu);
    forget(r);
    pthread_mutex_unlock(&mu);
  }
  return r;
}
int dup3(int a, int b, int f) {
  int r = REAL(dup3)(a, b, f);
  if (enabled && r >= 0) {
    pthread_mutex_lock(&mu);
    forget(r);
    pthread_mutex_unlock(&mu);
  }
  return r;
}

/* ---------- names going away (metadata itself passes through) ---------- */

/* Unlink or rename-over of (dirfd, p): if it names a regular file under POWERCUT_DIR (its
 * last link), journal after the call succeeded that its inode is gone, so a later file that
 * reuses the inode number is not confused with it. Holds `mu` across the call, so no write
 * to a new file with that inode can be journaled in between. */
#define NAME_GOES(dirfd, p, call)                                                   \
  do {                                                                              \
    if (!enabled) return (call);                                                    \
    int found = 0;                                                                  \
    struct stat st;                                                                 \
    char path[PATH_MAX];                                                            \
    ssize_t n = 0;                                                                  \
    pthread_mutex_lock(&mu);                                                        \
    int pfd = REAL(openat)(dirfd, p, O_PATH | O_NOFOLLOW | O_CLOEXEC);              \
    if (pfd >= 0) {                                                                 \
      char link[64];                                                                \
      snprintf(link, sizeof link, "/proc/self/fd/%d", pfd);                         \
      n = readlink(link, path, sizeof path - 1);                                    \
      if (n > 0 && fstat(pfd, &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink <= 1) { \
        path[n] = 0;                                                                \
        found = under_dir(path);                                                    \
      }                                                                             \
      REAL(close)(pfd);                                                             \
    }                                                                               \
    int r_ = (call);                                                                \
    int saved = errno;                                                              \
    if (r_ == 0 && found) journal('G', st.st_dev, st.st_ino, 0, 0, path, (uint64_t)n, 0); \
    pthread_mutex_unlock(&mu);                                                      \
    errno = saved;                                                                  \
    return r_;                                                                      \
  } while (0)

int unlink(const char *p) { NAME_GOES(AT_FDCWD, p, REAL(unlink)(p)); }
int unlinkat(int d, const char *p, int f) {
  if (f & AT_REMOVEDIR) return REAL(unlinkat)(d, p, f);
  NAME_GOES(d, p, REAL(unlinkat)(d, p, f));
}
int rename(const char *a, const char *b) { NAME_GOES(AT_FDCWD, b, REAL(rename)(a, b)); }
int renameat(int da, const char *a, int db, const char *b) {
  NAME_GOES(db, b, REAL(renameat)(da, a, db, b));
}
int renameat2(int da, const char *a, int db, const char *b, unsigned int f) {
  NAME_GOES(db, b, REAL(renameat2)(da, a, db, b, f));
}
