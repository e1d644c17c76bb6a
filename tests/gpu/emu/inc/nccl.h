// CPU emulation of the NCCL subset kernels/cuda/nccl_coll.cu uses, over MPI
// (the emulated "device" buffers are host memory). For fptq's layout only:
// a communicator's members are the consecutive MPI_COMM_WORLD ranks from the
// one that made the unique id (a stage's member 0) on, which is how fptq
// numbers a stage's ranks; the id carries that first rank. Group calls
// run their operations one after another, in the same order on every member.
#pragma once
#define OMPI_SKIP_MPICXX 1 // the C API only: no C++ bindings to link
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <stdint.h>
#include <string.h>

typedef enum { ncclSuccess = 0, ncclUnhandledCudaError = 1, ncclSystemError = 2, ncclInternalError = 3,
               ncclInvalidArgument = 4, ncclInvalidUsage = 5, ncclRemoteError = 6, ncclInProgress = 7 } ncclResult_t;
typedef enum { ncclInt8 = 0, ncclUint8 = 1, ncclInt32 = 2, ncclUint32 = 3, ncclInt64 = 4, ncclUint64 = 5,
               ncclFloat16 = 6, ncclFloat32 = 7, ncclFloat64 = 8 } ncclDataType_t;
typedef enum { ncclSum = 0, ncclProd = 1, ncclMax = 2, ncclMin = 3 } ncclRedOp_t;
#define NCCL_UNIQUE_ID_BYTES 128
typedef struct { char internal[NCCL_UNIQUE_ID_BYTES]; } ncclUniqueId;
struct emu_nccl_comm { MPI_Comm comm; };
typedef emu_nccl_comm *ncclComm_t;

inline const char *ncclGetErrorString(ncclResult_t r) { return r == ncclSuccess ? "no error" : "emulated NCCL error"; }
inline const char *ncclGetLastError(ncclComm_t) { return ""; }

inline ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    memset(id, 0, sizeof *id);
    int first = 0;
    if (MPI_Comm_rank(MPI_COMM_WORLD, &first) != MPI_SUCCESS) return ncclSystemError;
    memcpy(id->internal, "fptq-emu", 8);
    memcpy(id->internal + 8, &first, sizeof first);
    return ncclSuccess;
}

inline ncclResult_t ncclCommInitRank(ncclComm_t *out, int size, ncclUniqueId id, int rank) {
    int first;
    if (memcmp(id.internal, "fptq-emu", 8) != 0) return ncclInvalidArgument;
    memcpy(&first, id.internal + 8, sizeof first);
    MPI_Group world, g;
    MPI_Comm_group(MPI_COMM_WORLD, &world);
    int range[1][3] = {{first, first + size - 1, 1}};
    MPI_Group_range_incl(world, 1, range, &g);
    emu_nccl_comm *c = new emu_nccl_comm;
    const int rc = MPI_Comm_create_group(MPI_COMM_WORLD, g, 7300 + first, &c->comm);
    MPI_Group_free(&g);
    MPI_Group_free(&world);
    int r = -1;
    if (rc != MPI_SUCCESS || MPI_Comm_rank(c->comm, &r) != MPI_SUCCESS || r != rank) { delete c; return ncclInvalidUsage; }
    *out = c;
    return ncclSuccess;
}

inline MPI_Datatype emu_nccl_type(ncclDataType_t t) {
    switch (t) {
    case ncclFloat32: return MPI_FLOAT;
    case ncclFloat64: return MPI_DOUBLE;
    case ncclInt64: return MPI_INT64_T;
    case ncclUint8: return MPI_UINT8_T;
    default: return MPI_DATATYPE_NULL;
    }
}

inline ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t t, ncclRedOp_t op,
                                  ncclComm_t c, cudaStream_t) {
    const MPI_Datatype dt = emu_nccl_type(t);
    if (dt == MPI_DATATYPE_NULL || count > (size_t)INT32_MAX || (op != ncclSum && op != ncclMax)) return ncclInvalidArgument;
    const int rc = MPI_Allreduce(send == recv ? MPI_IN_PLACE : send, recv, (int)count, dt, op == ncclMax ? MPI_MAX : MPI_SUM,
                                 c->comm);
    return rc == MPI_SUCCESS ? ncclSuccess : ncclSystemError;
}

inline ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, ncclDataType_t t, int root, ncclComm_t c,
                                  cudaStream_t) {
    int r;
    MPI_Comm_rank(c->comm, &r);
    if (t != ncclUint8 || count > (size_t)INT32_MAX) return ncclInvalidArgument;
    if (r == root && send != recv) memmove(recv, send, count);
    return MPI_Bcast(recv, (int)count, MPI_UINT8_T, root, c->comm) == MPI_SUCCESS ? ncclSuccess : ncclSystemError;
}

inline ncclResult_t ncclGroupStart() { return ncclSuccess; }
inline ncclResult_t ncclGroupEnd() { return ncclSuccess; }
inline ncclResult_t ncclCommGetAsyncError(ncclComm_t, ncclResult_t *e) { *e = ncclSuccess; return ncclSuccess; }
inline ncclResult_t ncclCommDestroy(ncclComm_t c) { MPI_Comm_free(&c->comm); delete c; return ncclSuccess; }
inline ncclResult_t ncclCommAbort(ncclComm_t c) { return ncclCommDestroy(c); }
