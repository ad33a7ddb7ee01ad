/* Exercises libpktslab.so through its C ABI and pktslab.h.
 * Usage: pktslab_test            -> runs the checks, prints "ok"
 *        pktslab_test <fault>    -> performs a bad call that must abort */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pktslab.h"

extern void *__libc_malloc(size_t);

/* The header's structs must match the library's #[repr(C)] types
 * (pinned on the Rust side in src/capi.rs and src/client.rs tests). */
_Static_assert(sizeof(struct pktslab_stats) == 216, "pktslab_stats size");
_Static_assert(offsetof(struct pktslab_stats, mode) == 188, "pktslab_stats.mode");
_Static_assert(offsetof(struct pktslab_stats, slab_size) == 192, "pktslab_stats.slab_size");
_Static_assert(sizeof(struct pktslab_op) == 88, "pktslab_op size");
_Static_assert(offsetof(struct pktslab_op, inputs) == 56, "pktslab_op.inputs");
_Static_assert(offsetof(struct pktslab_op, outputs) == 72, "pktslab_op.outputs");
_Static_assert(offsetof(struct pktslab_op, cookie) == 80, "pktslab_op.cookie");
_Static_assert(sizeof(struct pktaccel_segment) == 16, "segment size");
_Static_assert(sizeof(struct pktaccel_completion) == 24, "completion size");
_Static_assert(sizeof(struct pktslab_iov) == 16, "iov size");
_Static_assert(sizeof(struct pktslab_limits) == 16, "pktslab_limits size");

#define CHECK(c)                                                             \
    do {                                                                     \
        if (!(c)) {                                                          \
            fprintf(stderr, "check failed at line %d: %s\n", __LINE__, #c);  \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

/* RFC 1071 checksum, the software reference for PKTACCEL_OP_CSUM. */
static uint16_t sw_csum(const uint8_t *d, size_t n) {
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i += 2)
        sum += (uint64_t)((d[i] << 8) | (i + 1 < n ? d[i + 1] : 0));
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

/* In the guest: malloc'ed buffers go to the device by physical address. */
static void device_round_trip(void) {
    pktslab_client *cl = pktslab_client_open();
    CHECK(cl != NULL);
    size_t n = 9000;
    uint8_t *src = malloc(n), *dst = malloc(n);
    CHECK(src && dst);
    for (size_t i = 0; i < n; i++) src[i] = (uint8_t)(i * 7 + 3);
    memset(dst, 0, n);
    struct pktslab_iov in = {src, n}, out = {dst, n};
    struct pktslab_op ops[2];
    memset(ops, 0, sizeof ops);
    ops[0].op = PKTACCEL_OP_CSUM;
    ops[0].inputs = &in;
    ops[0].n_in = 1;
    ops[1].op = PKTACCEL_OP_COPY;
    ops[1].inputs = &in;
    ops[1].n_in = 1;
    ops[1].outputs = &out;
    ops[1].n_out = 1;
    CHECK(pktslab_client_submit(cl, ops, 2) == 2);
    struct pktaccel_completion comp[2];
    int got = 0;
    while (got < 2) {
        int r = pktslab_client_reap(cl, comp + got, (uint32_t)(2 - got), -1);
        CHECK(r >= 0);
        got += r;
    }
    for (int i = 0; i < 2; i++) {
        CHECK(comp[i].status == PKTACCEL_STATUS_OK);
        if (comp[i].cookie == ops[0].cookie) CHECK(comp[i].result == sw_csum(src, n));
        else CHECK(comp[i].cookie == ops[1].cookie && comp[i].len == n);
    }
    CHECK(memcmp(src, dst, n) == 0);
    free(src);
    free(dst);
    pktslab_client_close(cl);
    printf("device round trip ok\n");
}

static void *worker(void *arg) {
    void **slots = arg;
    for (int i = 0; i < 1000; i++) {
        free(slots[i]); /* allocated by the main thread */
        slots[i] = malloc((size_t)(i % 300) + 1);
        CHECK(slots[i] != NULL);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) {
        char *p = malloc(37);
        if (!strcmp(argv[1], "double-free")) {
            free(p);
            free(p);
        } else if (!strcmp(argv[1], "invalid-free")) {
            free(p + 8);
        } else if (!strcmp(argv[1], "invalid-realloc")) {
            p = realloc(p + 16, 100);
        }
        return 0;
    }

    /* Classes and usable sizes. */
    char *p = malloc(37);
    CHECK(p && ((uintptr_t)p & 15) == 0);
    CHECK(malloc_usable_size(p) == 64);
    char *same = realloc(p, 60);
    CHECK(same == p);
    p = same;
    memset(p, 7, 60);

    /* v2p. */
    size_t contig = 0;
    uint64_t phys = pktslab_v2p(p, &contig);
    CHECK(phys < PKTSLAB_V2P_NOT_MAPPED && contig >= 64);
    int local;
    CHECK(pktslab_v2p(&local, &contig) == PKTSLAB_V2P_OUTSIDE && contig == 0);
    int mode = pktslab_mode();
    CHECK(mode == PKTSLAB_MODE_HOST_PAGEMAP || mode == PKTSLAB_MODE_HOST_SYNTHETIC ||
          mode == PKTSLAB_MODE_DEVICE);

    /* Aligned allocation family. */
    void *a = NULL;
    CHECK(posix_memalign(&a, 4096, 100) == 0 && ((uintptr_t)a & 4095) == 0);
    CHECK(posix_memalign(&a, 3, 100) == EINVAL);
    void *b = aligned_alloc(64, 100);
    CHECK(b && ((uintptr_t)b & 63) == 0);
    void *c = memalign(48, 10); /* rounded up to 64 like glibc */
    CHECK(c && ((uintptr_t)c & 63) == 0);
    void *v = valloc(10);
    CHECK(v && ((uintptr_t)v & 4095) == 0);
    void *pv = pvalloc(10);
    CHECK(pv && ((uintptr_t)pv & 4095) == 0 && malloc_usable_size(pv) >= 4096);
    void *big = memalign(1 << 22, 5 << 20);
    CHECK(big && ((uintptr_t)big & ((1 << 22) - 1)) == 0);
    /* Above PKTSLAB_PIN_MAX (128 KiB): ordinary memory, not in the arena,
     * but the heap's own: "not pinned", to its last byte. */
    CHECK(pktslab_v2p(big, NULL) == PKTSLAB_V2P_NOT_PINNED);
    CHECK(pktslab_v2p((char *)big + (5 << 20) - 1, NULL) == PKTSLAB_V2P_NOT_PINNED);
    int on_stack = 0;
    CHECK(pktslab_v2p(&on_stack, NULL) == PKTSLAB_V2P_OUTSIDE);
    free(a);
    free(b);
    free(c);
    free(v);
    free(pv);
    free(big);

    /* Overflow -> NULL + ENOMEM. */
    errno = 0;
    CHECK(calloc(SIZE_MAX / 2, 4) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(reallocarray(p, SIZE_MAX, 2) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(malloc(SIZE_MAX) == NULL && errno == ENOMEM);
    CHECK(p[59] == 7);

    /* calloc zeroes. */
    unsigned char *z = calloc(1000, 3);
    for (int i = 0; i < 3000; i++) CHECK(z[i] == 0);
    free(z);

    /* A pointer from the allocator underneath goes back to it. */
    char *g = __libc_malloc(100);
    CHECK(pktslab_v2p(g, NULL) == PKTSLAB_V2P_OUTSIDE);
    CHECK(malloc_usable_size(g) >= 100);
    strcpy(g, "from glibc");
    char *moved = realloc(g, 200); /* moves it into the arena */
    CHECK(moved && strcmp(moved, "from glibc") == 0);
    CHECK(pktslab_v2p(moved, NULL) < PKTSLAB_V2P_NOT_MAPPED);
    free(moved);
    free(__libc_malloc(50));

    /* Explicit API and segments. */
    unsigned char *buf = pktslab_alloc(64 * 1024);
    CHECK(buf);
    struct pktaccel_segment segs[64];
    ssize_t n = pktslab_segments(buf, 64 * 1024, PKTACCEL_SEG_IN, segs, 64);
    CHECK(n >= 1 && n <= 64);
    size_t total = 0;
    for (ssize_t i = 0; i < n; i++) total += segs[i].len;
    CHECK(total == 64 * 1024);
    CHECK(pktslab_segments(&local, 4, PKTACCEL_SEG_IN, segs, 64) == -EFAULT);
    buf = pktslab_realloc(buf, 100 * 1024);
    CHECK(buf && pktslab_usable_size(buf) == 128 * 1024);
    pktslab_free(buf);
    CHECK(pktslab_trim() % (64 * 1024) == 0); /* slabs of 64 KiB .. 2 MiB */

    /* The client needs the device; on the host there is none. */
    if (mode == PKTSLAB_MODE_DEVICE) {
        device_round_trip();
    } else {
        errno = 0;
        CHECK(pktslab_client_open() == NULL && errno == ENODEV);
        CHECK(sw_csum((const uint8_t *)"\x45\x00\x00\x1c", 4) == (uint16_t)~0x451c);
    }

    /* Frees from another thread. */
    void *slots[1000];
    for (int i = 0; i < 1000; i++) slots[i] = malloc((size_t)i * 7 + 1);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, worker, slots) == 0);
    CHECK(pthread_join(t, NULL) == 0);
    for (int i = 0; i < 1000; i++) free(slots[i]);

    struct pktslab_stats st;
    CHECK(pktslab_stats(&st) == 0);
    CHECK(st.allocs[2] >= 1); /* the 37-byte request: class 64 */
    CHECK(st.largest >= 64 * 1024 && st.bytes_pinned >= 64 * 1024);
    CHECK(st.ordinary_allocs >= 1); /* memalign(4 MiB, 5 MiB) */
    CHECK(st.slab_size == PKTSLAB_SLAB_SIZE && st.mode == (uint32_t)mode);
    free(p);
    printf("ok\n");
    return 0;
}
