/*
 * The ranks of a job: MPI world set-up, the S x G grid (a communicator per
 * stage), point-to-point hand-off of activations between stages, and the
 * collectives interface used for statistics: one table of functions with
 * an MPI implementation (here) and an NCCL one (kernels/cuda).
 */
#ifndef FPTQ_COMM_H
#define FPTQ_COMM_H

#include "../common/status.h"

typedef enum { FPTQ_DT_F32, FPTQ_DT_F64, FPTQ_DT_I64, FPTQ_DT_U8 } fptq_dtype;
typedef enum { FPTQ_OP_SUM, FPTQ_OP_MAX } fptq_reduce_op;

/* Collectives among the ranks of one stage. Every call is made by every
 * member in the same order. Results are bit-identical on every member (a
 * reduction is computed once and broadcast), so redundant computations on
 * the reduced data agree exactly across ranks. */
typedef struct fptq_collectives {
    const char *name;                 /* "mpi", "nccl" */
    int rank, size;                   /* within the stage */
    fptq_status (*allreduce)(void *ctx, void *buf, size_t count, fptq_dtype t, fptq_reduce_op op);
    fptq_status (*broadcast)(void *ctx, void *buf, size_t bytes, int root);
    /* recv gets every member's send block in member order; counts[m] bytes from member m */
    fptq_status (*allgatherv)(void *ctx, const void *send, void *recv, const size_t *counts);
    void *ctx;
} fptq_collectives;

typedef struct fptq_world {
    int rank, size;                   /* MPI_COMM_WORLD */
    int node_rank, node_size, n_nodes;/* from MPI_Comm_split_type(SHARED) */
    int stages, per_stage, stage, member;
    fptq_collectives stage_coll;      /* MPI collectives over this stage's ranks */
    void *impl;                       /* MPI communicators */
} fptq_world;

/* MPI_Init (or the singleton without mpirun) and the node layout. */
fptq_status fptq_world_init(int *argc, char ***argv, fptq_world *w);
/* Splits the world into `stages` stages of consecutive ranks. */
fptq_status fptq_world_set_grid(fptq_world *w, int stages);
void fptq_world_finalize(fptq_world *w);
/* Brings every rank down (MPI_Abort); main() calls it after printing the cause. */
void fptq_world_abort(const fptq_world *w, int exit_code);

/* Point to point in MPI_COMM_WORLD, any size (split into < 2^31-byte pieces). */
fptq_status fptq_world_send(const fptq_world *w, int dest, const void *buf, size_t bytes, int tag);
fptq_status fptq_world_recv(const fptq_world *w, int src, void *buf, size_t bytes, int tag);
/* Over the whole world: max of a double, broadcast of bytes from a world rank, barrier. */
fptq_status fptq_world_allreduce_max(const fptq_world *w, double *v);
fptq_status fptq_world_bcast(const fptq_world *w, void *buf, size_t bytes, int root);
fptq_status fptq_world_barrier(const fptq_world *w);
/* Non-blocking send of a small message (< 2^31 bytes): buf must stay
 * untouched until fptq_world_flush, which waits for every posted send.
 * Progress notes go this way so that no rank waits for the coordinator
 * to look at its mail. */
fptq_status fptq_world_post(fptq_world *w, int dest, const void *buf, size_t bytes, int tag);
fptq_status fptq_world_flush(fptq_world *w);
/* Coordinator side of progress notes: a message with this tag from any rank.
 * _poll returns at once (*got = 0 when none is waiting), _wait blocks. */
fptq_status fptq_world_note_poll(const fptq_world *w, int tag, void *buf, size_t bytes, int *got);
fptq_status fptq_world_note_wait(const fptq_world *w, int tag, void *buf, size_t bytes);

/* Collectives over a single rank (no MPI): every operation is the identity. */
void fptq_collectives_single(fptq_collectives *c);

/* Collectives on buffers in a backend's memory (be: kernels/backend.h),
 * staged through host memory and the host collectives `host` (which must
 * outlive them): download, reduce, upload. For a device backend without
 * NCCL; with NCCL the reductions stay on the device (kernels/cuda/nccl_coll.h). */
struct fptq_backend;
fptq_status fptq_collectives_staged(const struct fptq_backend *be, const fptq_collectives *host,
                                    fptq_collectives *out);
void fptq_collectives_staged_free(fptq_collectives *c);

#endif
