/*
 * mockdev.c - a stand-in for libpktslab's client API and the device's
 * AES-GCM and key-slot ops, for host tests of the provider's device path
 * (preloaded; the provider finds these symbols with dlsym as it finds
 * libpktslab's). AES-GCM is computed with libcrypto's default provider.
 *
 * MOCK_PIN=all     every address is "pinned" (zero-copy path);
 *         arena    only pktslab_alloc memory is (everything else staged).
 * MOCK_SLOTS=n     key slots of this file (default 16; ENOSPC beyond).
 * MOCK_FAIL=1      every GCM request completes with DEVICE_ERROR.
 * MOCK_DELAY_US=n  every request takes n microseconds (a device call in
 *                  progress, for the fork tests).
 * OP_CRC32 (zlib's CRC-32, seed in aux) too, for libpktcrc's tests.
 * A forked child gets a fresh "device file", as libpktslab's child does:
 * no keys, nothing in flight, counters from zero.
 * At exit prints "mockdev: N seal, M open, K key-set, C key-clear, R crc32".
 */
#include <errno.h>
#include <pthread.h>
#include <unistd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>

struct iov { const void *base; size_t len; };
struct op {
    uint16_t op, flags; uint32_t key_slot, aux, reserved;
    uint8_t params[40];
    const struct iov *inputs; uint32_t n_in, n_out;
    const struct iov *outputs; uint64_t cookie;
};
struct completion { uint64_t cookie; uint32_t status, len; uint64_t result; };

#define ARENA (64u << 20)
static unsigned char *arena;
static size_t arena_used;
static unsigned char keys[64][32];
static int key_set[64];
static struct completion last;
static int pending;
static uint64_t next_cookie = 1;
static unsigned long n_seal, n_open, n_kset, n_kclear, n_crc;

static void report(void)
{
    fprintf(stderr, "mockdev: %lu seal, %lu open, %lu key-set, %lu key-clear, %lu crc32\n",
            n_seal, n_open, n_kset, n_kclear, n_crc);
}

/* The child's device file is its own: nothing of the parent's on it. */
static void fresh_file_in_child(void)
{
    memset(keys, 0, sizeof keys);
    memset(key_set, 0, sizeof key_set);
    pending = 0;
    n_seal = n_open = n_kset = n_kclear = n_crc = 0;
}

__attribute__((constructor)) static void mock_init(void)
{
    pthread_atfork(NULL, NULL, fresh_file_in_child);
}

/* zlib's CRC-32 (IEEE, reflected), bit by bit. */
static uint32_t crc32_bits(uint32_t crc, const unsigned char *p, size_t n)
{
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1)));
    }
    return ~crc;
}

void *pktslab_client_open(void)
{
    if (!arena) {
        arena = malloc(ARENA);
        atexit(report);
    }
    return arena;
}

void *pktslab_alloc(size_t n)
{
    n = (n + 63) & ~(size_t)63;
    if (!arena || arena_used + n > ARENA)
        return NULL;
    void *p = arena + arena_used;
    arena_used += n;
    return p;
}

void pktslab_free(void *p) { (void)p; }

static int pinned(const void *p)
{
    const char *m = getenv("MOCK_PIN");
    if (m && !strcmp(m, "all"))
        return 1;
    return (const unsigned char *)p >= arena && (const unsigned char *)p < arena + ARENA;
}

uint64_t pktslab_v2p(const void *p, size_t *contig)
{
    if (contig)
        *contig = pinned(p) ? 4096 : 0;
    return pinned(p) ? (uint64_t)(uintptr_t)p : UINT64_MAX;
}

static size_t gather(const struct iov *v, uint32_t n, unsigned char *buf)
{
    size_t at = 0;
    for (uint32_t i = 0; i < n; i++) {
        memcpy(buf + at, v[i].base, v[i].len);
        at += v[i].len;
    }
    return at;
}

static void scatter(const struct iov *v, uint32_t n, const unsigned char *buf, size_t len)
{
    for (uint32_t i = 0; i < n && len; i++) {
        size_t k = v[i].len < len ? v[i].len : len;
        memcpy((void *)v[i].base, buf, k);
        buf += k;
        len -= k;
    }
}

/* Returns the status; out gets ct||tag (seal) or pt (open). */
static uint32_t gcm(const struct op *o, const unsigned char *in, size_t inl,
                    unsigned char *out, size_t *outl)
{
    int seal = o->op == 5, n;
    size_t aad = o->aux, tl = seal ? 0 : 16;
    if (o->key_slot >= 64 || !key_set[o->key_slot])
        return 6;
    if (inl < aad + tl)
        return 2;
    size_t dl = inl - aad - tl;
    EVP_CIPHER *c = EVP_CIPHER_fetch(NULL, "AES-256-GCM", "provider=default");
    EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
    EVP_CipherInit_ex2(x, c, keys[o->key_slot], o->params, seal, NULL);
    if (!seal)
        EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_SET_TAG, 16, (void *)(in + inl - 16));
    EVP_CipherUpdate(x, NULL, &n, in, (int)aad);
    EVP_CipherUpdate(x, out, &n, in + aad, (int)dl);
    int ok = EVP_CipherFinal_ex(x, out + dl, &n);
    if (seal)
        EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_GET_TAG, 16, out + dl);
    EVP_CIPHER_CTX_free(x);
    EVP_CIPHER_free(c);
    *outl = seal ? dl + 16 : dl;
    if (!ok) {
        memset(out, 0, dl);
        return 5;
    }
    return 0;
}

int pktslab_client_submit(void *c, struct op *o, uint32_t n)
{
    (void)c;
    if (n != 1 || pending)
        return -EINVAL;
    for (uint32_t i = 0; i < o->n_in; i++)
        if (!pinned(o->inputs[i].base))
            return -EFAULT;
    for (uint32_t i = 0; i < o->n_out; i++)
        if (!pinned(o->outputs[i].base))
            return -EFAULT;
    const char *s = getenv("MOCK_SLOTS");
    uint32_t slots = s ? (uint32_t)atoi(s) : 16;
    if ((o->op >= 5 && o->op <= 6) || o->op >= 8)
        if (o->key_slot >= slots)
            return o->op == 8 ? -ENOSPC : -ENOKEY;
    size_t inl = 0, outcap = 0;
    for (uint32_t i = 0; i < o->n_in; i++) inl += o->inputs[i].len;
    for (uint32_t i = 0; i < o->n_out; i++) outcap += o->outputs[i].len;
    unsigned char *in = malloc(inl + 1), *out = calloc(1, inl + 32);
    gather(o->inputs, o->n_in, in);
    size_t outl = 0;
    uint32_t st = 0;
    uint64_t result = 0;
    const char *delay = getenv("MOCK_DELAY_US");
    if (delay)
        usleep((useconds_t)atoi(delay));
    switch (o->op) {
    case 3:
        result = crc32_bits(o->aux, in, inl);
        n_crc++;
        break;
    case 8:
        if (inl != 32) { st = 2; break; }
        memcpy(keys[o->key_slot], in, 32);
        key_set[o->key_slot] = 1;
        n_kset++;
        break;
    case 9:
        memset(keys[o->key_slot], 0, 32);
        key_set[o->key_slot] = 0;
        n_kclear++;
        break;
    case 5: case 6:
        if (getenv("MOCK_FAIL")) { st = 8; break; }
        st = gcm(o, in, inl, out, &outl);
        if (o->op == 5) n_seal++; else n_open++;
        if (st == 0 && outl > outcap) st = 7;
        if (st == 0 || st == 5) scatter(o->outputs, o->n_out, out, st ? outcap : outl);
        break;
    default:
        st = 1;
    }
    free(in);
    free(out);
    o->cookie = next_cookie++;
    last = (struct completion){ o->cookie, st, (uint32_t)outl, result };
    pending = 1;
    return 1;
}

int pktslab_client_reap(void *c, struct completion *out, uint32_t max, int timeout_ms)
{
    (void)c; (void)timeout_ms;
    if (!pending || max < 1)
        return 0;
    *out = last;
    pending = 0;
    return 1;
}

/* libpktslab's run: submit, then reap the one completion. */
int pktslab_client_run(void *c, struct op *o, uint32_t n, struct completion *out)
{
    int r = pktslab_client_submit(c, o, n);
    if (r < 0)
        return r;
    return pktslab_client_reap(c, out, n, -1) == (int)n ? 0 : -EIO;
}

/* The datasheet's limits (MOCK_SLOTS limits key slots at submit, as a
 * driver whose slots are shared would). */
struct limits { uint32_t key_slots, max_segments, max_request_bytes, queues; };
int pktslab_client_limits(void *c, struct limits *l)
{
    (void)c;
    *l = (struct limits){ 16, 64, 1u << 20, 1 };
    return 0;
}
