# Shared by the command-line test scripts (sourced): a temporary folder
# removed on exit, check NAME STATUS DETAIL that counts and prints
# "ok NAME" / "FAIL NAME: DETAIL", and finish, which prints the closing
# "N passed, M failed" line and exits non-zero on any failure.
pass=0
fail=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fptq_test.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

check() { # name, status (0 = ok), detail
    if [ "$2" -eq 0 ]; then
        echo "ok $1"; pass=$((pass + 1))
    else
        echo "FAIL $1: $3"; fail=$((fail + 1))
    fi
}

finish() {
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
}
