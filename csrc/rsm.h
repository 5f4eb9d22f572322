/* rsm.h -- everything the Python binding sees; included by the cffi-generated module. */
#ifndef RSM_H
#define RSM_H
#include "rsm_common.h"
#include "segment.h"
#include "waitq.h"
#include "share.h"
#include "lock.h"
#include "sem.h"
#include "event.h"
#include "once.h"
#include "rwlock.h"
#include "barrier.h"
#endif
