/* segment.c -- publishing and awaiting a segment header (the creation race). */
#include "segment.h"

void rsm_segment_publish(rsm_segment_header *h, uint32_t state)
{
    atomic_store_explicit(&h->initialized, state, memory_order_release);
    rsm_futex_wake(&h->initialized, 0x7FFFFFFF);
}

int rsm_segment_wait_ready(rsm_segment_header *h, int64_t deadline_ns)
{
    int64_t end = rsm_slice_end(deadline_ns);
    for (;;) {
        uint32_t v = atomic_load_explicit(&h->initialized, memory_order_acquire);
        if (v != RSM_INIT_BUILDING)
            return RSM_OK;
        if (rsm_now_ns() >= end)
            return (deadline_ns >= 0 && rsm_now_ns() >= deadline_ns) ? RSM_TIMEOUT : RSM_SLICE;
        rsm_futex_wait(&h->initialized, RSM_INIT_BUILDING, end);
    }
}
