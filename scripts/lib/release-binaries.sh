# Sourced by the bench scripts that build nothing themselves: sets BATON and BENCH to the release
# binaries of baton and baton-bench (under CARGO_TARGET_DIR if set) and exits if either is missing.

BATON=${CARGO_TARGET_DIR:-target}/release/baton
BENCH=${CARGO_TARGET_DIR:-target}/release/baton-bench
for binary in "$BATON" "$BENCH"; do
    [ -x "$binary" ] || { echo "$binary is missing: cargo build --release --workspace" >&2; exit 1; }
done
