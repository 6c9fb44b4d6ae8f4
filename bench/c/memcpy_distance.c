/* How fast glibc's memcpy copies at each distance between destination and source (mod 4 KiB),
 * against the same copy in 2 KiB blocks from the end backwards: the measurement behind
 * crates/dist/src/node.rs `copy_floats` (BENCHMARKS.md, "The np 8, 1M-float row").
 *
 *   cc -O2 bench/c/memcpy_distance.c -o /tmp/memcpy_distance && /tmp/memcpy_distance
 *
 * Prints GB/s, best of 30 copies, for each size and distance. Not part of `make bench`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { BLOCK = 2048, REPS = 30 };

/* Called through a pointer so the compiler cannot inline the bounded block copies as its own
 * `rep movs`: the point is to time glibc's memcpy, as the Rust code calls it. */
static void *(*volatile copy)(void *, const void *, size_t) = memcpy;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void backwards(char *dst, const char *src, size_t n) {
    while (n > 0) {
        size_t k = n < BLOCK ? n : BLOCK;
        n -= k;
        copy(dst + n, src + n, k);
    }
}

static double rate(char *dst, const char *src, size_t n, int blocks) {
    double best = 1e30;
    for (int r = 0; r < REPS; r++) {
        double t = now();
        if (blocks)
            backwards(dst, src, n);
        else
            copy(dst, src, n);
        t = now() - t;
        if (t < best)
            best = t;
    }
    return n / best / 1e9;
}

int main(void) {
    const size_t apart = 8 << 20; /* whole pages between source and destination */
    char *buf = aligned_alloc(4096, 2 * apart + (4 << 20));
    if (!buf)
        return 1;
    memset(buf, 1, 2 * apart + (4 << 20));
    const size_t sizes[] = {3000, 20000, 100000, 500000, 600000, 2000000, 4194304};
    const int ahead[] = {0, 4, 16, 28, 32, 48, 64, 2048, 4080};
    printf("bytes\tdst-src mod 4096\tmemcpy GB/s\tbackward 2 KiB blocks GB/s\n");
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++)
        for (size_t a = 0; a < sizeof ahead / sizeof *ahead; a++) {
            char *src = buf + 4096, *dst = src + apart + ahead[a];
            printf("%zu\t%d\t%.1f\t%.1f\n", sizes[s], ahead[a], rate(dst, src, sizes[s], 0),
                   rate(dst, src, sizes[s], 1));
        }
    return 0;
}
