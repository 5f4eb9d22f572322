/* raft_status.h -- the shared records of a replicated-state-machine cluster (rsm_shm.cluster).
 *
 * The body of a RSM_KIND_RAFT_STATUS segment is one seqlocked record.  The header's
 * params say which: params[0] is RSM_RAFT_REC_PEER (a peer's status, "<cluster>.s<id>")
 * or RSM_RAFT_REC_CONTROL (the cluster control block, "<cluster>.ctl"); params[1] is
 * RSM_RAFT_STATUS_VERSION.
 *
 * Seqlock.  A record is `seq` followed by the payload struct stored as 64-bit words.
 * Writers (one at a time: a peer writes only its own status; control writers hold the
 * cluster's lock) make `seq` odd, store the words, and make it even again; readers copy
 * the words and retry when `seq` was odd or changed meanwhile (Boehm, "Can seqlocks get
 * along with programming language memory models?", 2012: relaxed word accesses fenced by
 * the sequence loads, so there is no data race in the C11 sense).  A writer killed in the
 * middle leaves `seq` odd: rsm_raft_rec_load then fails with RSM_WOULDBLOCK after a
 * bounded number of tries and Python reports the record unreadable (a control writer
 * that takes over the lock simply publishes a complete record, which makes it even).
 *
 * Everything a reader gets is untrusted: a dead or hostile writer may have left any
 * bits.  Python validates ids, roles and string lengths before using them.
 */
#ifndef RSM_RAFT_STATUS_H
#define RSM_RAFT_STATUS_H

#include "rsm_common.h"

#define RSM_RAFT_STATUS_VERSION 2  /* 2: the control block's restart policy and counts */
#define RSM_RAFT_MAX_PEER_ID 64      /* peer ids are 1..64: one bit each in a uint64 mask */
#define RSM_RAFT_MATCH_MAX 16        /* followers whose match index a leader publishes */
#define RSM_RAFT_DATA_DIR_MAX 1024   /* bytes of the data directory path (NUL-padded UTF-8) */

enum { RSM_RAFT_REC_PEER = 1, RSM_RAFT_REC_CONTROL = 2 };

/* Roles (rsm_shm.raft.types.Role) plus what a stopped peer leaves behind. */
enum {
    RSM_RAFT_ROLE_FOLLOWER = 0, RSM_RAFT_ROLE_PRE_CANDIDATE = 1, RSM_RAFT_ROLE_CANDIDATE = 2,
    RSM_RAFT_ROLE_LEADER = 3, RSM_RAFT_ROLE_STOPPED = 15
};

/* A peer slot's state in the control block, as its manager last set it. */
enum {
    RSM_RAFT_PEER_ABSENT = 0,   /* slot unused */
    RSM_RAFT_PEER_RUNNING = 1,  /* started (is it alive? pid + start_time say) */
    RSM_RAFT_PEER_STOPPED = 2,  /* stopped cleanly or not started */
    RSM_RAFT_PEER_KILLED = 3,   /* SIGKILLed by fault injection */
    RSM_RAFT_PEER_PAUSED = 4,   /* SIGSTOPped by fault injection */
    RSM_RAFT_PEER_REMOVED = 5,  /* removed from the membership */
    RSM_RAFT_PEER_CRASHED = 6,  /* its process died unasked; the manager restarts it after a backoff */
    RSM_RAFT_PEER_FAILED = 7    /* crashed more often than the restart policy allows: left dead */
};

/* A peer's status, published by the peer after every loop turn that changed it. */
typedef struct rsm_raft_status {
    uint64_t cluster_id;          /*   0 the cluster's random id (its "epoch") */
    uint64_t id;                  /*   8 peer id, 1..RSM_RAFT_MAX_PEER_ID */
    int64_t pid;                  /*  16 the peer process */
    uint64_t start_time;          /*  24 its start time (/proc/pid/stat #22): pid reuse guard */
    uint64_t role;                /*  32 RSM_RAFT_ROLE_* */
    uint64_t term;                /*  40 */
    uint64_t leader;              /*  48 leader id as this peer knows it (0: none) */
    uint64_t commit;              /*  56 */
    uint64_t applied;             /*  64 */
    uint64_t first_index;         /*  72 first index still in the log */
    uint64_t last_index;          /*  80 */
    int64_t updated_ns;           /*  88 CLOCK_MONOTONIC of this publication */
    int64_t last_contact_ns;      /*  96 CLOCK_MONOTONIC of the last message from a peer (0: none) */
    uint64_t voters;              /* 104 bit (id-1) set for every voter */
    uint64_t learners;            /* 112 bit (id-1) set for every learner */
    uint64_t msgs_in;             /* 120 envelopes taken from the inbox */
    uint64_t msgs_out;            /* 128 envelopes put into other inboxes */
    uint64_t msgs_dropped;        /* 136 envelopes not sent: link cut, drop rate, ring full or gone */
    uint64_t msgs_bad;            /* 144 garbage taken from the inbox (dropped and counted) */
    uint64_t fsyncs;              /* 152 */
    uint64_t fsync_ns;            /* 160 total time spent in fsync */
    uint64_t snapshots_sent;      /* 168 */
    uint64_t snapshots_received;  /* 176 */
    uint64_t proposals;           /* 184 client commands proposed by this peer as leader */
    uint64_t reads;               /* 192 linearizable reads served */
    uint64_t control_seq;         /* 200 the control block version whose links this peer applies */
    uint64_t nmatch;              /* 208 entries used in match_id/match_index */
    uint64_t match_id[RSM_RAFT_MATCH_MAX];     /* 216 leader only: follower ids ... */
    uint64_t match_index[RSM_RAFT_MATCH_MAX];  /* 344 ... and their match index */
} rsm_raft_status;                /* 472 */

RSM_STATIC_ASSERT(offsetof(rsm_raft_status, updated_ns) == 88, "rsm_raft_status.updated_ns");
RSM_STATIC_ASSERT(offsetof(rsm_raft_status, msgs_in) == 120, "rsm_raft_status.msgs_in");
RSM_STATIC_ASSERT(offsetof(rsm_raft_status, control_seq) == 200, "rsm_raft_status.control_seq");
RSM_STATIC_ASSERT(offsetof(rsm_raft_status, nmatch) == 208, "rsm_raft_status.nmatch");
RSM_STATIC_ASSERT(offsetof(rsm_raft_status, match_index) == 344, "rsm_raft_status.match_index");
RSM_STATIC_ASSERT(sizeof(rsm_raft_status) == 472, "rsm_raft_status size");

/* One peer slot of the control block. */
typedef struct rsm_raft_peer_slot {
    uint64_t id;                  /*  0 peer id (0: slot unused) */
    uint64_t state;               /*  8 RSM_RAFT_PEER_* */
    int64_t pid;                  /* 16 its process while started */
    uint64_t start_time;          /* 24 the process's start time */
} rsm_raft_peer_slot;

RSM_STATIC_ASSERT(sizeof(rsm_raft_peer_slot) == 32, "rsm_raft_peer_slot size");

/* The cluster control block: who runs, which links are cut, how lossy the network is.
 * Peers read it once per loop turn (cheap when `seq` did not move) and apply the link
 * table and drop rate to what they send. */
typedef struct rsm_raft_control {
    uint64_t cluster_id;          /*    0 random, fixed at creation; envelopes carry it */
    int64_t owner_pid;            /*    8 the process managing the cluster (LocalCluster) */
    uint64_t owner_start;         /*   16 its start time */
    uint64_t drop_ppm;            /*   24 drop rate of every link, parts per million */
    uint64_t next_peer_id;        /*   32 the id add_peer hands out next */
    uint64_t stopping;            /*   40 nonzero: the cluster is being stopped */
    uint64_t cut[RSM_RAFT_MAX_PEER_ID];             /*   48 bit (to-1) of cut[from-1]: from->to is cut */
    rsm_raft_peer_slot peers[RSM_RAFT_MAX_PEER_ID]; /*  560 */
    char data_dir[RSM_RAFT_DATA_DIR_MAX];           /* 2608 */
    uint64_t restart_max;         /* 3632 automatic restarts allowed per window (0: the manager restarts none) */
    uint64_t restart_window_ms;   /* 3640 that window */
    uint64_t restarts[RSM_RAFT_MAX_PEER_ID];        /* 3648 automatic restarts of each peer so far */
} rsm_raft_control;                                 /* 4160 */

RSM_STATIC_ASSERT(offsetof(rsm_raft_control, cut) == 48, "rsm_raft_control.cut");
RSM_STATIC_ASSERT(offsetof(rsm_raft_control, peers) == 560, "rsm_raft_control.peers");
RSM_STATIC_ASSERT(offsetof(rsm_raft_control, data_dir) == 2608, "rsm_raft_control.data_dir");
RSM_STATIC_ASSERT(offsetof(rsm_raft_control, restarts) == 3648, "rsm_raft_control.restarts");
RSM_STATIC_ASSERT(sizeof(rsm_raft_control) == 4160, "rsm_raft_control size");

#define RSM_RAFT_STATUS_WORDS (sizeof(rsm_raft_status) / 8)
#define RSM_RAFT_CONTROL_WORDS (sizeof(rsm_raft_control) / 8)
RSM_STATIC_ASSERT(sizeof(rsm_raft_status) % 8 == 0, "rsm_raft_status is whole words");
RSM_STATIC_ASSERT(sizeof(rsm_raft_control) % 8 == 0, "rsm_raft_control is whole words");

/* The shared records: a sequence word, then the payload as atomic words. */
typedef struct rsm_raft_status_rec {
    _Atomic uint64_t seq;
    _Atomic uint64_t words[RSM_RAFT_STATUS_WORDS];
} rsm_raft_status_rec;

typedef struct rsm_raft_control_rec {
    _Atomic uint64_t seq;
    _Atomic uint64_t words[RSM_RAFT_CONTROL_WORDS];
} rsm_raft_control_rec;

RSM_STATIC_ASSERT(sizeof(rsm_raft_status_rec) == 8 + sizeof(rsm_raft_status), "rsm_raft_status_rec size");
RSM_STATIC_ASSERT(sizeof(rsm_raft_control_rec) == 8 + sizeof(rsm_raft_control), "rsm_raft_control_rec size");

/* Publish `src` (one writer at a time). */
void rsm_raft_status_store(rsm_raft_status_rec *rec, const rsm_raft_status *src);
void rsm_raft_control_store(rsm_raft_control_rec *rec, const rsm_raft_control *src);
/* Copy a consistent record into `dst`: RSM_OK, or RSM_WOULDBLOCK when no consistent copy
 * was seen in `tries` attempts (a writer is busy, or died mid-write). */
int rsm_raft_status_load(rsm_raft_status_rec *rec, rsm_raft_status *dst, int tries);
int rsm_raft_control_load(rsm_raft_control_rec *rec, rsm_raft_control *dst, int tries);
/* The sequence word alone (acquire): unchanged and even means the record did not change. */
uint64_t rsm_raft_status_seq(rsm_raft_status_rec *rec);
uint64_t rsm_raft_control_seq(rsm_raft_control_rec *rec);

#endif
