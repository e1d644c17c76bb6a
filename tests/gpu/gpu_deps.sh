# shellcheck shell=bash disable=SC2034
# Sourced by fetch_debs.sh and device_check.sh: the Debian packages the build
# needs, carried as .debs in .gpu-deps/debs (compressed: the carry limit is
# 64 MiB) and unpacked with dpkg -x into .gpu-deps/root, where the links that
# Debian's maintainer scripts would make (update-alternatives) are made by
# hand; and the environment that points a build and a run at that root.

# The packages: the -dev packages the build reads (headers, pkg-config files,
# .so links), pkgconf, and every shared library their ELF files load, found by
# following ldd from those packages' files on Debian 12 (libc6, libgcc-s1,
# libstdc++6 and zlib1g are on any system and stay behind). OpenMPI's
# network plugins (ofi, ucx, psm) bring the InfiniBand and fabric libraries.
GPU_DEPS_PACKAGES="
libopenblas-pthread-dev libopenblas0-pthread libgfortran5 libquadmath0
liblapacke-dev liblapacke libtmglib3
libcjson-dev libcjson1
libcmocka-dev libcmocka0
pkgconf-bin libpkgconf3
libhdf5-openmpi-dev libhdf5-openmpi-103-1 libaec0 libsz2
libcurl4 libnghttp2-14 librtmp1 libssh2-1 libpsl5 libldap-2.5-0 libsasl2-2
libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libkeyutils1 libcom-err2
libbrotli1 libidn2-0 libunistring2 libgnutls30 libnettle8 libhogweed6 libgmp10
libp11-kit0 libtasn1-6 libffi8 libssl3 libzstd1 libudev1 libuuid1 libatomic1
libopenmpi-dev libopenmpi3 openmpi-common openmpi-bin libpmix2 libmunge2
libhwloc15 libevent-core-2.1-7 libevent-pthreads-2.1-7
libfabric1 libucx0 libibverbs1 ibverbs-providers librdmacm1 libnl-3-200
libnl-route-3-200 libnuma1 libpsm2-2 libpsm-infinipath1
"

GPU_DEPS_MA=x86_64-linux-gnu

# gpu_deps_extract DEBDIR ROOT: unpack every .deb (dpkg -x, or ar + tar where
# there is no dpkg), then the links, then drop what no build or run reads.
gpu_deps_extract() {
    local debs=$1 root=$2 d
    mkdir -p "$root"
    for d in "$debs"/*.deb; do
        if command -v dpkg >/dev/null 2>&1; then
            dpkg -x "$d" "$root" || return 1
        else
            local tmp
            tmp=$(mktemp -d) || return 1
            (cd "$tmp" && ar x "$d") || return 1
            tar xf "$tmp"/data.tar.* -C "$root" || return 1
            rm -rf "$tmp"
        fi
    done
    gpu_deps_links "$root"
    rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/lintian"
    # static archives: fptq links the shared libraries
    find "$root" -name '*.a' -type f -delete
}

# The alternatives Debian's postinst scripts would register, and absolute
# symlinks turned into links inside the root.
gpu_deps_links() {
    local root=$1 l t
    local lib="$root/usr/lib/$GPU_DEPS_MA" inc="$root/usr/include/$GPU_DEPS_MA"
    mkdir -p "$lib/pkgconfig" "$inc" "$root/usr/bin"
    ln -sfn openblas-pthread/libopenblas.so "$lib/libopenblas.so"
    ln -sfn openblas-pthread/libopenblas.so.0 "$lib/libopenblas.so.0"
    ln -sfn openblas-pthread/libblas.so.3 "$lib/libblas.so.3"
    ln -sfn openblas-pthread/libblas.so "$lib/libblas.so"
    ln -sfn openblas-pthread/liblapack.so.3 "$lib/liblapack.so.3"
    ln -sfn openblas-pthread/liblapack.so "$lib/liblapack.so"
    ln -sfn ../openblas-pthread/pkgconfig/openblas.pc "$lib/pkgconfig/openblas.pc"
    ln -sfn openblas-pthread/cblas.h "$inc/cblas.h"
    ln -sfn hdf5-openmpi.pc "$lib/pkgconfig/hdf5-mpi.pc"
    ln -sfn hdf5-openmpi.pc "$lib/pkgconfig/hdf5.pc"
    ln -sfn ../../lib/$GPU_DEPS_MA/openmpi/include "$inc/mpi"
    ln -sfn openmpi/lib/libmpi.so "$lib/libmpi.so"
    [ -e "$lib/pkgconfig/ompi-c.pc" ] && ln -sfn ompi-c.pc "$lib/pkgconfig/mpi-c.pc"
    [ -e "$lib/pkgconfig/ompi.pc" ] && ln -sfn ompi.pc "$lib/pkgconfig/mpi.pc"
    for t in mpicc mpirun mpiexec; do
        [ -e "$root/usr/bin/$t.openmpi" ] && ln -sfn "$t.openmpi" "$root/usr/bin/$t"
    done
    [ -e "$root/usr/bin/pkgconf" ] && ln -sfn pkgconf "$root/usr/bin/pkg-config"
    # absolute link targets point at the host's /: re-aim them into the root
    find "$root" -type l | while read -r l; do
        t=$(readlink "$l")
        case "$t" in
        /*) ln -sfn "$root$t" "$l" ;;
        esac
    done
}

# Library folders of the root, in search order.
gpu_deps_libdirs() {
    local root=$1
    echo "$root/usr/lib/$GPU_DEPS_MA:$root/usr/lib/$GPU_DEPS_MA/openblas-pthread:$root/usr/lib/$GPU_DEPS_MA/openmpi/lib:$root/usr/lib/$GPU_DEPS_MA/hdf5/openmpi:$root/lib/$GPU_DEPS_MA"
}

# gpu_deps_cmake_args ROOT: the CMake options of a build against the root
# (printed one per line). Compilers and CMake itself run with the system's
# libraries: the root reaches the build through pkg-config (a wrapper that
# gives pkgconf its library), CMAKE_PREFIX_PATH, rpath-link for the linker and
# an rpath in the binaries (DT_RPATH, so the libraries' own dependencies and
# OpenMPI's plugins resolve there too).
gpu_deps_cmake_args() {
    local root=$1 dirs
    dirs=$(gpu_deps_libdirs "$root")
    local lib="$root/usr/lib/$GPU_DEPS_MA"
    local wrap="$root/pkg-config-wrap"
    cat >"$wrap" <<EOF
#!/bin/sh
# pkgconf from the carried root, reading only the root's .pc files
export LD_LIBRARY_PATH="$lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export PKG_CONFIG_LIBDIR="$lib/pkgconfig:$lib/openblas-pthread/pkgconfig:$root/usr/share/pkgconfig"
export PKG_CONFIG_SYSROOT_DIR="$root"
exec "$root/usr/bin/pkgconf" "\$@"
EOF
    chmod +x "$wrap"
    echo "-DPKG_CONFIG_EXECUTABLE=$wrap"
    echo "-DCMAKE_PREFIX_PATH=$root/usr"
    # headers found by no pkg-config file (lapacke.h): after -I, before the system's
    echo "-DCMAKE_C_FLAGS=-isystem $root/usr/include"
    echo "-DCMAKE_EXE_LINKER_FLAGS=-Wl,--disable-new-dtags -Wl,-rpath-link,$dirs"
    echo "-DCMAKE_BUILD_RPATH=$dirs"
    # MPI without the mpicc wrapper (it would need the root's libraries to run)
    echo "-DMPI_SKIP_COMPILER_WRAPPER=TRUE"
    echo "-DMPI_C_COMPILER=/usr/bin/false"
    echo "-DMPI_C_HEADER_DIR=$lib/openmpi/include"
    echo "-DMPI_C_LIB_NAMES=mpi"
    echo "-DMPI_mpi_LIBRARY=$lib/openmpi/lib/libmpi.so"
    echo "-DMPIEXEC_EXECUTABLE=$root/usr/bin/mpirun.openmpi"
    echo "-DMPIEXEC_BIN=$root/mpirun-wrap"
    gpu_deps_mpirun_wrapper "$root"
}

# Environment of a process that runs on the root's libraries (OpenMPI's
# own relocation variables included); printed as export lines.
gpu_deps_run_env() {
    local root=$1
    cat <<EOF
export LD_LIBRARY_PATH="$(gpu_deps_libdirs "$root")\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export OPAL_PREFIX="$root/usr"
export PMIX_INSTALL_PREFIX="$root/usr/lib/$GPU_DEPS_MA/pmix2"
export PATH="$root/usr/bin:\$PATH"
export OMPI_MCA_mca_base_component_show_load_errors=0
export OMPI_MCA_plm_rsh_agent=
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
EOF
}

gpu_deps_mpirun_wrapper() {
    local root=$1
    {
        echo "#!/bin/sh"
        gpu_deps_run_env "$root"
        echo "exec \"$root/usr/bin/mpirun.openmpi\" \"\$@\""
    } >"$root/mpirun-wrap"
    chmod +x "$root/mpirun-wrap"
}
