/*
 * Self-test of powercut.so (run by tests/powercut.test.js under LD_PRELOAD): writes files in
 * <dir> through every call the shim interposes, the way sled and durably do (and a few more),
 * fsyncing some of it. At each durability point it copies the file's content to
 * <expect>/<name> (outside <dir>, so untracked): what the file must hold after a cut. A file
 * with no copy in <expect> was never synced and must be empty after the cut. When done it
 * prints READY and waits to be cut (SIGSTOP + SIGKILL).
 *
 *   selftest <dir> <expect>
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

static const char *dir, *expect;

static void check(int ok, const char *what) {
  if (!ok) {
    perror(what);
    exit(1);
  }
}

static char *at(const char *base, const char *name) {
  static char bufs[4][PATH_MAX];
  static int i;
  char *b = bufs[i++ % 4];
  snprintf(b, PATH_MAX, "%s/%s", base, name);
  return b;
}

static void fill(char *b, size_t n, char c) {
  for (size_t i = 0; i < n; i++) b[i] = (char)(c + (i % 7));
}

/* Copies <dir>/<name> (as it is now) to <expect>/<as>. Reads through a fresh descriptor. */
static void snap(const char *name, const char *as) {
  struct stat st;
  int fd = open(at(dir, name), O_RDONLY);
  check(fd >= 0 && fstat(fd, &st) == 0, "snap open");
  char *b = malloc(st.st_size + 1);
  check(pread(fd, b, st.st_size, 0) == st.st_size, "snap read");
  close(fd);
  int out = open(at(expect, as), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  check(out >= 0 && write(out, b, st.st_size) == st.st_size, "snap write");
  close(out);
  free(b);
}

int main(int argc, char **argv) {
  if (argc != 3) return 2;
  dir = argv[1];
  expect = argv[2];
  static char buf[600000];

  /* a: write, fsync; then overwrite, extend, shrink and grow without a sync */
  int a = open(at(dir, "a"), O_RDWR | O_CREAT, 0644);
  check(a >= 0, "open a");
  fill(buf, 10000, 'A');
  check(write(a, buf, 10000) == 10000, "write a");
  check(fsync(a) == 0, "fsync a");
  snap("a", "a");
  fill(buf, 100, 'b');
  check(pwrite(a, buf, 100, 50) == 100, "pwrite a");
  check(pwrite64(a, buf, 100, 9990) == 100, "pwrite64 a");
  struct iovec v[2] = {{buf, 30}, {buf + 100, 40}};
  check(writev(a, v, 2) == 70, "writev a");
  check(pwritev(a, v, 2, 3) == 70, "pwritev a");
  check(ftruncate(a, 5000) == 0, "ftruncate a");
  check(ftruncate64(a, 20000) == 0, "ftruncate64 a");
  check(fallocate(a, 0, 0, 40000) == 0, "fallocate a");
  check(sync_file_range(a, 0, 40000, SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) == 0,
        "sync_file_range a"); /* not a durability point */
  close(a);

  /* b: like a sled blob: created write-only and exclusive, written, never synced */
  int b = open(at(dir, "b"), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  check(b >= 0, "open b");
  fill(buf, sizeof buf, 'c');
  check(write(b, buf, 4) == 4 && write(b, buf, 1) == 1 && write(b, buf, sizeof buf) == (ssize_t)sizeof buf, "write b");
  close(b);

  /* c: like durably's data file: written through one descriptor, fdatasync'ed through a
   * second, read-only one; then more writes through a third (openat64, pwritev64) */
  int c = open64(at(dir, "c"), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  int cr = open(at(dir, "c"), O_RDONLY | O_CLOEXEC);
  check(c >= 0 && cr >= 0, "open c");
  fill(buf, 8192, 'd');
  check(pwrite64(c, buf, 8192, 0) == 8192, "pwrite64 c");
  check(fdatasync(cr) == 0, "fdatasync c");
  snap("c", "c");
  int c2 = openat64(AT_FDCWD, at(dir, "c"), O_WRONLY | O_APPEND);
  check(c2 >= 0, "openat64 c");
  fill(buf, 5000, 'e');
  check(write(c2, buf, 5000) == 5000, "append c");
  struct iovec w[1] = {{buf, 4096}};
  check(pwritev64(c, w, 1, 100) == 4096, "pwritev64 c");
  int cd = dup(c);
  check(cd >= 0 && pwrite(cd, buf, 10, 0) == 10, "pwrite via dup c");

  /* d: written, fsynced, renamed; then changed under its new name */
  int d = creat(at(dir, "d.tmp"), 0644);
  check(d >= 0, "creat d");
  fill(buf, 3000, 'f');
  check(write(d, buf, 3000) == 3000 && fsync(d) == 0, "write d");
  check(rename(at(dir, "d.tmp"), at(dir, "d")) == 0, "rename d");
  snap("d", "d");
  check(pwrite(d, buf + 7, 100, 2990) == 100, "pwrite d");
  close(d);

  /* e: written without a sync and unlinked; f: then created (may reuse e's inode) and synced */
  int e = open(at(dir, "e"), O_RDWR | O_CREAT, 0644);
  check(e >= 0 && write(e, buf, 2000) == 2000, "write e");
  close(e);
  check(unlink(at(dir, "e")) == 0, "unlink e");
  int f = open(at(dir, "f"), O_RDWR | O_CREAT, 0644);
  check(f >= 0 && write(f, buf, 1234) == 1234 && fdatasync(f) == 0, "write f");
  snap("f", "f");
  close(f);

  /* g: every write through O_DSYNC is durable by itself */
  int g = open(at(dir, "g"), O_WRONLY | O_CREAT | O_DSYNC, 0644);
  check(g >= 0 && write(g, buf, 777) == 777, "write g");
  snap("g", "g");
  close(g);

  /* h: synced, then O_TRUNC'ed on a new open and rewritten: the truncation is undone too */
  int h = open(at(dir, "h"), O_RDWR | O_CREAT, 0644);
  check(h >= 0 && write(h, buf, 4321) == 4321 && fsync(h) == 0, "write h");
  snap("h", "h");
  close(h);
  h = open(at(dir, "h"), O_WRONLY | O_TRUNC);
  check(h >= 0 && write(h, "x", 1) == 1, "rewrite h");
  close(h);

  /* i: truncate(2) by path after a sync */
  int i = open(at(dir, "i"), O_RDWR | O_CREAT, 0644);
  check(i >= 0 && write(i, buf, 999) == 999 && fsync(i) == 0, "write i");
  snap("i", "i");
  close(i);
  check(truncate(at(dir, "i"), 10) == 0, "truncate i");

  printf("READY\n");
  fflush(stdout);
  for (;;) pause();
}
