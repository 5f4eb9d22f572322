/* core_api.c -- the table rsm_shm._fast calls the C core through (see core_api.h). */
#include "core_api.h"

static const rsm_core_api table = {
    .version = RSM_CORE_API_VERSION,
    .size = sizeof(rsm_core_api),
#define RSM_CORE_ENTRY(name) .name = name,
    RSM_CORE_FUNCTIONS(RSM_CORE_ENTRY)
#undef RSM_CORE_ENTRY
};

uintptr_t rsm_core_api_address(void) { return (uintptr_t)&table; }
