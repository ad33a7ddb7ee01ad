/*
 * pktslab.h - pinned-memory slab allocator and pktaccel client.
 *
 * libpktslab.so (built with `cargo build -p pktslab --features preload`)
 * replaces malloc/free/calloc/realloc/reallocarray/posix_memalign/
 * aligned_alloc/memalign/valloc/pvalloc/malloc_usable_size when preloaded
 * (LD_PRELOAD=libpktslab.so) or linked first. Those keep their libc
 * declarations; this header declares the library's own API.
 *
 * Environment: PKTSLAB_BACKEND=auto|device|host, PKTSLAB_CACHING=uc|wc|wb,
 * PKTSLAB_FALLBACK=1, PKTSLAB_STATS=1, PKTSLAB_DEVICE=path,
 * PKTSLAB_MAX_PINNED=bytes[KMG], PKTSLAB_ARENA=bytes, PKTSLAB_SYNTHETIC=1.
 */
#ifndef PKTSLAB_H
#define PKTSLAB_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Slab geometry: pieces are powers of two from 16 bytes to half a slab. */
#define PKTSLAB_SLAB_SIZE   (2u * 1024 * 1024)
#define PKTSLAB_MIN_PIECE   16u
#define PKTSLAB_NUM_CLASSES 17

/* pktslab_v2p() error values: all above any physical address. */
#define PKTSLAB_V2P_OUTSIDE    UINT64_MAX          /* not an arena pointer */
#define PKTSLAB_V2P_NOT_PINNED (UINT64_MAX - 1)    /* the heap's ordinary memory: fallback, or malloc() above PKTSLAB_PIN_MAX */
#define PKTSLAB_V2P_NOT_MAPPED (UINT64_MAX - 2)    /* arena address, no slab */

/* Backend modes (pktslab_mode(), struct pktslab_stats.mode). */
#define PKTSLAB_MODE_DEVICE         1  /* /dev/pktaccel, contiguous slabs */
#define PKTSLAB_MODE_HOST_PAGEMAP   2  /* host memory, /proc/self/pagemap */
#define PKTSLAB_MODE_HOST_SYNTHETIC 3  /* host memory, synthetic addresses */
#define PKTSLAB_MODE_MISSING        4  /* no pinned memory at all */

struct pktslab_stats {
    uint64_t allocs[PKTSLAB_NUM_CLASSES + 1]; /* per class 16 B..1 MiB, then large */
    uint64_t requested;       /* bytes asked for, all allocations */
    uint64_t usable;          /* bytes handed out, all allocations */
    uint64_t largest;         /* largest single request */
    uint64_t bytes_pinned;    /* pinned bytes held now */
    uint64_t bytes_fallback;  /* unpinned fallback bytes held now */
    uint32_t waste_permille;  /* internal waste, 1/1000 */
    uint32_t mode;            /* PKTSLAB_MODE_* */
    uint64_t slab_size;
    uint64_t bytes_ordinary;  /* live malloc() bytes above PKTSLAB_PIN_MAX */
    uint64_t ordinary_allocs; /* malloc() calls served above PKTSLAB_PIN_MAX */
};

/* Allocation that must come from the arena (never from another allocator). */
void *pktslab_alloc(size_t size);
void pktslab_free(void *p);               /* aborts on a foreign/invalid pointer */
void *pktslab_realloc(void *p, size_t size);
size_t pktslab_usable_size(void *p);

/* Virtual-to-physical: returns the physical address and stores in
 * *contig (if not NULL) how many bytes are physically contiguous from it.
 * For pinned arena memory one table load: O(1), no syscall, no lock. Two
 * slower answers take a lock: ordinary memory malloc() handed out above
 * PKTSLAB_PIN_MAX (a binary search, answering NOT_PINNED), and on the host
 * test backend the first v2p in a slab run, which pins it then. Not
 * async-signal-safe. */
uint64_t pktslab_v2p(const void *p, size_t *contig);

int pktslab_stats(struct pktslab_stats *out); /* 0, or -1 before first use */
int pktslab_mode(void);                       /* PKTSLAB_MODE_*, -1 on failure */
/* Gives entirely free slabs back to the driver (after emptying the calling
 * thread's cache); returns bytes released. malloc_trim() does the same. */
size_t pktslab_trim(void);

/* ---- accelerator client (mirrors pktaccel_abi.rs) ---- */

#define PKTACCEL_SEG_IN  0u
#define PKTACCEL_SEG_OUT 1u

/* Op and status codes (pktaccel_abi.rs; checked by the Rust tests). */
#define PKTACCEL_OP_NOP          0
#define PKTACCEL_OP_CSUM         1
#define PKTACCEL_OP_CRC32C       2
#define PKTACCEL_OP_CRC32        3
#define PKTACCEL_OP_RSS          4
#define PKTACCEL_OP_AES_GCM_SEAL 5
#define PKTACCEL_OP_AES_GCM_OPEN 6
#define PKTACCEL_OP_COPY         7
#define PKTACCEL_OP_KEY_SET      8
#define PKTACCEL_OP_KEY_CLEAR    9

#define PKTACCEL_STATUS_OK           0
#define PKTACCEL_STATUS_UNSUPPORTED  1
#define PKTACCEL_STATUS_BAD_REQUEST  2
#define PKTACCEL_STATUS_BAD_ADDRESS  3
#define PKTACCEL_STATUS_TOO_BIG      4
#define PKTACCEL_STATUS_AUTH_FAILED  5
#define PKTACCEL_STATUS_NO_KEY       6
#define PKTACCEL_STATUS_SHORT_OUTPUT 7
#define PKTACCEL_STATUS_DEVICE_ERROR 8

struct pktaccel_segment {   /* IocSegment */
    uint64_t addr;
    uint32_t len;
    uint32_t dir;
};

struct pktaccel_completion { /* IocCompletion */
    uint64_t cookie;
    uint32_t status;
    uint32_t len;
    uint64_t result;
};

struct pktslab_iov {
    const void *base;
    size_t len;
};

struct pktslab_op {
    uint16_t op;        /* PKTACCEL OP_* code */
    uint16_t flags;     /* 0 */
    uint32_t key_slot;
    uint32_t aux;
    uint32_t reserved;  /* 0 */
    uint8_t params[40];
    const struct pktslab_iov *inputs;
    uint32_t n_in;
    uint32_t n_out;
    const struct pktslab_iov *outputs;
    uint64_t cookie;    /* out */
};

/* A handle is used by one thread at a time (open one per thread, or hold
 * a lock around every call on a shared one); several handles may be live
 * at once, and each reaps only its own requests. */
typedef struct pktslab_client pktslab_client;

/* NULL with errno ENODEV when the heap has no /dev/pktaccel behind it. */
pktslab_client *pktslab_client_open(void);
void pktslab_client_close(pktslab_client *c);
/* Submits n requests, 1 to 256 (the driver's batch limit; else -EINVAL;
 * pktslab_client_run takes any number), buffers split at physical
 * discontinuities, and fills the cookie of each op the driver accepted.
 * Returns how many it accepted, always a prefix of ops: n, or fewer when
 * the driver stopped part-way, with errno saying why (the accepted ones
 * are in flight: reap them; resubmit the rest). -errno when none went in
 * (-EFAULT: buffer not pinned). Buffers must stay alive until their
 * completions are reaped. */
int pktslab_client_submit(pktslab_client *c, struct pktslab_op *ops, uint32_t n);
/* Reaps up to max completions of this client's submits (never another
 * client's: libpktcrc's, the provider's, another thread's); timeout_ms < 0
 * waits forever. -ENOENT when none of its requests is in flight. */
int pktslab_client_reap(pktslab_client *c, struct pktaccel_completion *out,
                        uint32_t max, int timeout_ms);
/* Runs n requests (any number) and waits for all of them: their
 * completions go to out[0..n] in request order. Returns 0 or -errno;
 * requests the driver took are reaped before an error returns, so the
 * buffers are the caller's again either way. */
int pktslab_client_run(pktslab_client *c, struct pktslab_op *ops, uint32_t n,
                       struct pktaccel_completion *out);

struct pktslab_limits {      /* the driver's limits (PKTACCEL_IOC_INFO) */
    uint32_t key_slots;      /* AES key slots of each open file */
    uint32_t max_segments;   /* segments per request */
    uint32_t max_request_bytes;
    uint32_t queues;         /* request queues */
};
/* 0, or -errno. */
int pktslab_client_limits(pktslab_client *c, struct pktslab_limits *out);
/* What the client does with a buffer that is not pinned: PKTSLAB_COPY_NEVER
 * (the default) refuses the batch with -EFAULT; PKTSLAB_COPY_FALLBACK sends
 * that batch through the driver's copy path (bounce buffers); _ALWAYS sends
 * every batch through it. 0, or -EINVAL. */
#define PKTSLAB_COPY_NEVER 0
#define PKTSLAB_COPY_FALLBACK 1
#define PKTSLAB_COPY_ALWAYS 2
int pktslab_client_copy_mode(pktslab_client *c, int mode);

/* Physical segments of [p, p+len): returns the count (only max written)
 * or -EFAULT if some byte is not pinned. */
ssize_t pktslab_segments(const void *p, size_t len, uint32_t dir,
                         struct pktaccel_segment *out, size_t max);

#ifdef __cplusplus
}
#endif
#endif /* PKTSLAB_H */
