/*
 * The collectives of worker/comm.h over NCCL, on device buffers: statistics
 * all-reduced where they were accumulated, with no trip through the host.
 * Set-up takes the ncclUniqueId's bytes, which the caller broadcasts over
 * MPI (fptq_world_bcast), so this file needs no MPI. C linkage.
 */
#ifndef FPTQ_NCCL_COLL_H
#define FPTQ_NCCL_COLL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "../../worker/comm.h"

/* Size of the id that rank 0 makes and every member receives (NCCL_UNIQUE_ID_BYTES). */
size_t fptq_nccl_id_bytes(void);
/* On the stage's member 0 only: a fresh id into id[0 .. fptq_nccl_id_bytes()). */
fptq_status fptq_nccl_make_id(void *id, size_t cap);
/* Every member, after the id's broadcast: chooses the GPU local_rank % devices
 * (fptq_cuda_init), joins the communicator of `size` members as `rank`, and
 * fills *out ("nccl"; buffers passed to it are device memory). Collective:
 * every member calls it. Operations are queued on the backend's stream, in
 * order with the ops that produced the buffers, and each call returns once
 * its result is in place (as the MPI table's do). */
fptq_status fptq_nccl_init(const void *id, size_t id_bytes, int rank, int size, int local_rank,
                           fptq_collectives *out);
/* Destroys the communicator (aborts it if an operation failed). */
void fptq_nccl_free(fptq_collectives *c);

#ifdef __cplusplus
}
#endif

#endif
