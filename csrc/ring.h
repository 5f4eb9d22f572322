/* ring.h -- a bounded queue of variable-length byte messages in one shared segment.
 *
 * Body layout (after the segment header):
 *
 *   offset 0                 rsm_ring, the control block below (256 bytes, 4 cache lines)
 *   cwq_offset = 256         rsm_waitq of blocked consumers (kind 0)
 *   pwq_offset               rsm_waitq of blocked producers (kind = need class, see below)
 *   data_offset (64-aligned) the data area: `capacity` bytes, a power of two >= 64
 *
 * Positions.  head, read and tail are 64-bit byte positions that only grow; a position p
 * lives at data[p & (capacity - 1)].  Invariant: head <= read <= tail <= head + capacity.
 *   [head, read)   records taken (or being taken) by consumers, not yet freed
 *   [read, tail)   records reserved by producers, published or not yet
 *   [tail, head + capacity)   free space
 * With a single consumer, `read` is not used: head is both the next record and the end of
 * the freed space.
 *
 * Records are 16-byte aligned: a 16-byte header (never split: capacity is a multiple of
 * 16) then the payload, which may wrap around the end of the data area (split copies, so
 * no padding record is ever needed and any message up to capacity - 16 bytes fits in an
 * empty ring).
 *
 *   word 0  state (64 bits, every transition one atomic store or CAS):
 *             bits  0-2   phase: RESERVED, PUBLISHED, CLAIMED, CONSUMED
 *             bits  3-24  pid: the reserving producer (RESERVED/PUBLISHED) or the claiming
 *                         consumer (CLAIMED); Linux pids are < 2^22 (PID_MAX_LIMIT)
 *             bits 25-63  tag: (position >> 4) mod 2^39, so a state word left over from an
 *                         earlier lap never passes for the record now at that offset
 *   word 1  len (32 bits, payload bytes), 32 reserved bits
 *
 * A record is published by ONE store of its state word (PUBLISHED) after the payload is
 * copied.  Nobody reads a header that is not yet written: a producer writes it before the
 * tail passes it (single producer: before storing tail; multi-producer: under the
 * reservation lock `plock`, whose word holds the holder's pid).
 *
 * Multi-producer put: take plock (CAS 0 -> pid), write header RESERVED(pid) + len, CAS
 * tail += size, release plock; copy the payload; store state PUBLISHED.  A producer killed
 * while holding plock (a few instructions) is detected by the pid in the word and plock is
 * taken over (Python judges the death; rsm_ring_repair); one killed after reserving leaves
 * RESERVED(dead pid), which a consumer turns into CONSUMED (a tombstone, one CAS).
 *
 * Multi-consumer get: at r = read, read the header and re-check that read is still r (so
 * the slot cannot have been freed and reused under the read: head <= read), then
 * CAS state PUBLISHED -> CLAIMED(my pid), CAS read += size
 * (others help: a CLAIMED or CONSUMED record at read is skipped by anyone), copy out,
 * store CONSUMED, then advance head over every CONSUMED record (CAS on head).  A consumer
 * killed while CLAIMED never handed the message to Python (claim, copy and CONSUMED happen
 * inside one C call), so the record is claimed again by a live consumer and delivered
 * (rsm_ring_reclaim): nothing published is lost.
 *
 * Single producer / single consumer (flags): no lock.  The producer writes the whole
 * record (state PUBLISHED) and then CASes tail (a CAS only because close() may set tail's
 * CLOSED bit); the consumer copies and stores head.  A killed one leaves nothing half-visible.  The role is held by a thread id
 * (prod_owner / cons_owner), claimed on first use; a second live thread gets
 * RSM_NOT_OWNER, a dead owner's role is taken over.
 *
 * Spinning: a waiter spins briefly before sleeping only if the peer that would wake it
 * last ran on another CPU (prod_cpu / cons_cpu, from sched_getcpu): on a shared CPU the
 * peer cannot run while we spin.
 *
 * Cached positions: producers keep their last view of head in head_cache (on their own
 * cache line) and consumers their last view of tail in tail_cache; both lag the real
 * value, so they are only ever conservative, and the real word is read (and the cache
 * refreshed) before anyone decides the ring is full or empty.  In the common case a put
 * and a get each touch only their own side's control line plus the record.
 *
 * Sleeping (waitq.h): consumers wait on cwq, producers on pwq; everyone re-checks its
 * condition after enqueueing (Dekker with nwaiters), and wakers only touch a queue whose
 * nwaiters (or noverflow) is non-zero, so nobody makes a system call when nobody sleeps.
 * A producer's waiter kind is its need class k (needs at most 16 << k bytes; 15 = more),
 * so a consumer wakes only producers whose message now fits, and only once a slice of the
 * ring (RSM_RING_WAKE_*) is free: one wake-up per many gets when producers outrun
 * consumers; a sleeper that would fit earlier still re-checks at its next slice.
 */
#ifndef RSM_RING_H
#define RSM_RING_H

#include "waitq.h"

enum { RSM_REC_NONE = 0, RSM_REC_RESERVED = 1, RSM_REC_PUBLISHED = 2, RSM_REC_CLAIMED = 3, RSM_REC_CONSUMED = 4 };
enum { RSM_RING_SINGLE_PRODUCER = 1, RSM_RING_SINGLE_CONSUMER = 2 };
enum { RSM_RING_ROLE_PRODUCER = 0, RSM_RING_ROLE_CONSUMER = 1 };
/* rsm_ring_op.suspect: why a blocked call made no progress for a slice. */
enum { RSM_SUSPECT_NONE = 0, RSM_SUSPECT_PLOCK = 1, RSM_SUSPECT_RESERVED = 2, RSM_SUSPECT_ROLE = 3 };

#define RSM_REC_HEADER 16u
#define RSM_REC_ALIGN 16u
#define RSM_RING_MIN_CAPACITY 64u
/* 2 GiB: the segment header's body_size (segment.h) is 32 bits, and so is a record's len. */
#define RSM_RING_MAX_CAPACITY (1ull << 31)
#define RSM_RING_CTRL_SIZE 256u
#define RSM_REC_PID_MAX ((1u << 22) - 1)
#define RSM_RING_NEED_CLASSES 16u
/* Blocked producers are woken once min(capacity / 8, 64 KiB) is free (see wake_producers). */
#define RSM_RING_WAKE_FRACTION 8u
#define RSM_RING_WAKE_MAX 65536u
/* A consumer finding the ring empty polls tail this long before it enqueues to sleep
 * (only when the producer last ran on another CPU). */
#define RSM_RING_POLL_NS 3000
/* ... or, on the producer's CPU, yields it this many times (lets a runnable producer in). */
#define RSM_RING_POLL_YIELDS 4
/* A put finding the reservation lock busy waits at least this long for it, whatever its
 * timeout (the holder is inside a few instructions, or preempted there, or dead). */
#define RSM_RING_PLOCK_GRACE_NS (10LL * 1000 * 1000)

typedef struct rsm_rec {
    _Atomic uint64_t state;  /* tag << 25 | pid << 3 | phase */
    uint32_t len;            /* payload bytes */
    uint32_t _reserved;
} rsm_rec;

typedef struct rsm_ring {
    /* line 0: fixed at creation, plus the closed flag */
    uint64_t capacity;         /* data bytes, a power of two */
    uint64_t data_offset;      /* from the start of this struct */
    uint64_t cwq_offset;
    uint64_t pwq_offset;
    uint32_t flags;            /* RSM_RING_SINGLE_PRODUCER | RSM_RING_SINGLE_CONSUMER */
    uint32_t nslots;           /* of each wait queue */
    _Atomic uint32_t closed;   /* mirror of tail's CLOSED bit for inspection tools */
    _Atomic uint32_t repairs;  /* dead peers' leftovers repaired: tombstones, reclaimed claims,
                                * reservation-lock and role takeovers (statistics) */
    uint32_t _pad0[4];
    /* line 1: producers */
    _Atomic uint64_t tail;
    _Atomic uint64_t nput;     /* messages reserved (statistics, qsize) */
    _Atomic uint32_t plock;    /* multi-producer reservation lock: holder pid, 0 = free */
    _Atomic uint32_t prod_owner;  /* single-producer mode: the producer thread id, 0 = none */
    _Atomic uint32_t prod_cpu;    /* CPU of the latest put: a consumer on the same CPU sleeps at once */
    uint32_t _pad1a;
    _Atomic uint64_t head_cache;  /* producers' last view of head (<= head): saves reading the
                                   * consumers' cache line on every put */
    uint32_t _pad1[6];
    /* line 2: consumers */
    _Atomic uint64_t read;     /* multi-consumer: next record to claim */
    _Atomic uint64_t nget;     /* messages taken (statistics, qsize) */
    _Atomic uint32_t cons_owner;  /* single-consumer mode: the consumer thread id */
    _Atomic uint32_t cons_cpu;    /* CPU of the latest get: a producer on the same CPU sleeps at once */
    _Atomic uint64_t tail_cache;  /* consumers' last view of tail's position (<= tail) */
    uint32_t _pad2[8];
    /* line 3: the end of the freed space */
    _Atomic uint64_t head;
    uint32_t _pad3[14];
} rsm_ring;

/* tail's bit 0 (positions are 16-aligned): set by close() with one atomic OR.  Producers
 * advance tail only by CAS, so once it is set no record can be added: a consumer that sees
 * it with nothing left to read knows the stream has ended (end of stream is exact). */
#define RSM_RING_TAIL_CLOSED 1ull
#define RSM_RING_POS_MASK (~15ull)

/* Per blocking call, kept by Python across slices (like rsm_waiter). */
typedef struct rsm_ring_op {
    uint64_t done;           /* put_many: items put so far; get_many: items taken */
    uint64_t offset;         /* put_many: bytes of the input consumed so far */
    uint64_t len;            /* get: length of the message (or the buffer size needed) */
    uint64_t suspect_pos;    /* RSM_SUSPECT_RESERVED: the stuck record */
    int32_t suspect_pid;     /* pid (or tid for ROLE) whose liveness Python should judge */
    uint32_t suspect;        /* RSM_SUSPECT_* */
} rsm_ring_op;

RSM_STATIC_ASSERT(sizeof(rsm_rec) == RSM_REC_HEADER, "rsm_rec layout");
RSM_STATIC_ASSERT(offsetof(rsm_ring, closed) == 40, "rsm_ring.closed offset");
RSM_STATIC_ASSERT(offsetof(rsm_ring, tail) == 64, "rsm_ring.tail offset");
RSM_STATIC_ASSERT(offsetof(rsm_ring, plock) == 80, "rsm_ring.plock offset");
RSM_STATIC_ASSERT(offsetof(rsm_ring, head_cache) == 96, "rsm_ring.head_cache offset");
RSM_STATIC_ASSERT(offsetof(rsm_ring, read) == 128, "rsm_ring.read offset");
RSM_STATIC_ASSERT(offsetof(rsm_ring, tail_cache) == 152, "rsm_ring.tail_cache offset");
RSM_STATIC_ASSERT(offsetof(rsm_ring, cons_owner) == 144, "rsm_ring.cons_owner offset");
RSM_STATIC_ASSERT(offsetof(rsm_ring, head) == 192, "rsm_ring.head offset");
RSM_STATIC_ASSERT(sizeof(rsm_ring) == RSM_RING_CTRL_SIZE, "rsm_ring layout");
RSM_STATIC_ASSERT(sizeof(rsm_ring_op) == 40, "rsm_ring_op layout");

size_t rsm_ring_size(uint64_t capacity, uint32_t nslots);
/* RSM_INVAL if capacity is not a power of two in range or nslots is out of range. */
int rsm_ring_init(rsm_ring *r, uint64_t capacity, uint32_t flags, uint32_t nslots);
/* Validate an attached ring against the segment's body size (memory from another process
 * is not trusted): RSM_OK or RSM_INVAL. */
int rsm_ring_check(const rsm_ring *r, uint64_t body_size);
/* The largest payload a ring can ever hold. */
uint64_t rsm_ring_max_message(const rsm_ring *r);

/* Non-blocking fast paths, no waiter and no op: put returns RSM_OK, RSM_WOULDBLOCK (full),
 * RSM_CLOSED, RSM_INVAL (too large), RSM_NOT_OWNER (another thread holds the SP role) or
 * RSM_RETRY (plock busy or a role to judge: take the slow path).  get returns the
 * message length (>= 0) or minus a status: -RSM_WOULDBLOCK (empty or the next record not
 * yet published), -RSM_CLOSED (closed and drained), -RSM_OVERFLOW (buffer too small:
 * take the slow path), -RSM_RETRY. */
int rsm_ring_put1(rsm_ring *r, const char *data, uint64_t len);
int64_t rsm_ring_get1(rsm_ring *r, char *buf, uint64_t cap);

/* Blocking calls, one slice at a time (RSM_SLICE: call again with the same w and op).
 * put: RSM_OK, RSM_TIMEOUT (deadline 0: a non-blocking try), RSM_CLOSED, RSM_INVAL,
 * RSM_NOT_OWNER.  get returns the message length (>= 0) or minus a status, like get1.  put_many puts n messages (data concatenated, lens[i] each) in order;
 * op->done counts those put.  get: op->len = length; RSM_OVERFLOW (op->len = size needed,
 * nothing taken; also returned as -RSM_OVERFLOW by get).  get_many takes 1..max_items messages (blocking only for the first),
 * lengths into lens, payloads concatenated into buf; op->done = count. */
int rsm_ring_put(rsm_ring *r, rsm_waiter *w, const char *data, uint64_t len, int64_t deadline_ns,
                 rsm_ring_op *op);
int rsm_ring_put_many(rsm_ring *r, rsm_waiter *w, const char *data, const uint32_t *lens, uint64_t n,
                      int64_t deadline_ns, rsm_ring_op *op);
int64_t rsm_ring_get(rsm_ring *r, rsm_waiter *w, char *buf, uint64_t cap, int64_t deadline_ns, rsm_ring_op *op);
int rsm_ring_get_many(rsm_ring *r, rsm_waiter *w, char *buf, uint64_t cap, uint32_t *lens, uint64_t max_items,
                      int64_t deadline_ns, rsm_ring_op *op);

/* Leave a wait queue after an exception between slices, passing on a consumed wake. */
void rsm_ring_abandon(rsm_ring *r, rsm_waiter *w, uint32_t role);

/* Close: puts fail from now on, gets drain then fail; every waiter wakes. */
void rsm_ring_close(rsm_ring *r);

/* Recovery, after Python judged op->suspect_pid dead (mechanism here, policy in Python).
 * Returns RSM_OK if this call repaired something, RSM_RETRY if the state moved on. */
int rsm_ring_repair(rsm_ring *r, uint32_t suspect, uint64_t pos, int32_t dead_pid);
/* Multi-consumer: records in [head, read) still CLAIMED (pos and claimer pid), up to max. */
uint32_t rsm_ring_claims(rsm_ring *r, uint64_t *pos, int32_t *pids, uint32_t max);
/* Take over a record CLAIMED by dead_pid and deliver it to the caller (as rsm_ring_get). */
int rsm_ring_reclaim(rsm_ring *r, uint64_t pos, int32_t dead_pid, char *buf, uint64_t cap, rsm_ring_op *op);
/* Give up this thread's single-producer/consumer roles (detach). */
void rsm_ring_release_roles(rsm_ring *r);

#endif
