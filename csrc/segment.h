/* segment.h -- the header at the start of every rsm_shm segment.
 *
 * Written once by the creator before `initialized` is set to RSM_INIT_READY (release);
 * attachers wait on `initialized` (a futex word) and then validate every field: magic,
 * layout version, kind, sizes against the file size, and a CRC32 over the immutable
 * bytes, so a truncated, corrupt or foreign segment is rejected, never trusted.
 * Python (rsm_shm/segment.py) packs and unpacks this with the offsets asserted below;
 * tests/test_layout.py checks both sides agree.
 */
#ifndef RSM_SEGMENT_H
#define RSM_SEGMENT_H

#include "rsm_common.h"

#define RSM_SEGMENT_MAGIC 0x314D5352u  /* "RSM1" little-endian */
#define RSM_LAYOUT_VERSION 2  /* 2: reader slots in RWLock, seats in Barrier, holder slots in robust semaphores */
#define RSM_HEADER_SIZE 256
#define RSM_REF_NAME_MAX 128
#define RSM_NPARAMS 8

enum { RSM_INIT_BUILDING = 0, RSM_INIT_READY = 1, RSM_INIT_FAILED = 2 };
enum { RSM_SEG_ANONYMOUS = 1 };

/* Segment kinds (the `kind` field); names in rsm_shm/segment.py Kind. */
enum {
    RSM_KIND_LOCK = 1, RSM_KIND_RLOCK = 2, RSM_KIND_SEMAPHORE = 3, RSM_KIND_BOUNDED_SEMAPHORE = 4,
    RSM_KIND_EVENT = 5, RSM_KIND_AUTO_RESET_EVENT = 6, RSM_KIND_CONDITION = 7, RSM_KIND_BARRIER = 8,
    RSM_KIND_RWLOCK = 9, RSM_KIND_GATE = 10, RSM_KIND_ONCE = 11, RSM_KIND_COUNTDOWN = 12,
    RSM_KIND_RING = 20, RSM_KIND_QUEUE = 21, RSM_KIND_AUTOMATON = 30, RSM_KIND_RAFT_STATUS = 40,
    RSM_KIND_POOL = 50
};

typedef struct rsm_segment_header {
    uint32_t magic;                 /* RSM_SEGMENT_MAGIC */
    uint16_t version;               /* RSM_LAYOUT_VERSION */
    uint16_t kind;                  /* RSM_KIND_* */
    _Atomic uint32_t initialized;   /* RSM_INIT_*; the only mutable header field */
    int32_t creator_pid;
    uint64_t creator_start;         /* creator's start time, clock ticks after boot (/proc/pid/stat #22) */
    int64_t created_ns;             /* CLOCK_REALTIME nanoseconds */
    uint32_t header_size;           /* RSM_HEADER_SIZE: the body starts here */
    uint32_t body_size;             /* bytes after the header */
    uint32_t flags;                 /* RSM_SEG_* */
    uint32_t nparams;               /* how many of params[] are meaningful */
    uint64_t params[RSM_NPARAMS];   /* kind-specific parameters (slots, value, parties, ...) */
    char ref_name[RSM_REF_NAME_MAX];/* a related segment (a Condition's external lock), NUL-padded */
    uint32_t crc;                   /* CRC32 (zlib) of bytes [0,8) + [12,240) */
    uint32_t _pad[3];
} rsm_segment_header;

RSM_STATIC_ASSERT(offsetof(rsm_segment_header, initialized) == 8, "header.initialized");
RSM_STATIC_ASSERT(offsetof(rsm_segment_header, creator_start) == 16, "header.creator_start");
RSM_STATIC_ASSERT(offsetof(rsm_segment_header, header_size) == 32, "header.header_size");
RSM_STATIC_ASSERT(offsetof(rsm_segment_header, params) == 48, "header.params");
RSM_STATIC_ASSERT(offsetof(rsm_segment_header, ref_name) == 112, "header.ref_name");
RSM_STATIC_ASSERT(offsetof(rsm_segment_header, crc) == 240, "header.crc");
RSM_STATIC_ASSERT(sizeof(rsm_segment_header) == RSM_HEADER_SIZE, "header size");

/* Wait (one slice at most) until the creator publishes the header. */
int rsm_segment_wait_ready(rsm_segment_header *h, int64_t deadline_ns);
void rsm_segment_publish(rsm_segment_header *h, uint32_t state);

#endif
