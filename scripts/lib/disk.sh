# Disk space for the build, checked before anything is compiled.
# Sourced by scripts/test; not run.
#
# A clean run of ./scripts/test writes about 2.8 GB into the target directory (test binaries
# with line tables only, no incremental cache; see [profile.dev] in Cargo.toml). Running out of
# disk half-way shows up as a linker "Bus error" or "No space left on device" minutes in; this
# check says so at once, with the numbers. The default need is that plus ~0.5 GB for the system
# tools the next step may install (Chromium is the largest) and the tests' temporary files.
BUILD_SPACE_NEEDED_MB=${BUILD_SPACE_NEEDED_MB:-3500}

# ensure_build_space TARGET_DIR: fails when the free space on TARGET_DIR's filesystem, plus what
# the directory already holds (a rebuild reuses it), is below BUILD_SPACE_NEEDED_MB.
ensure_build_space() {
  local target="$1" probe have_mb used_mb=0
  probe="$target"
  while [ ! -d "$probe" ]; do probe="$(dirname "$probe")"; done
  have_mb=$(df -Pm "$probe" | awk 'NR == 2 { print $4 }')
  if [ -d "$target" ]; then used_mb=$(du -sm "$target" 2>/dev/null | awk '{ print $1 }'); fi
  if [ $((have_mb + used_mb)) -lt "$BUILD_SPACE_NEEDED_MB" ]; then
    echo "error: the build needs about ${BUILD_SPACE_NEEDED_MB} MB under $target;" \
      "${have_mb} MB are free there and the directory holds ${used_mb} MB." >&2
    echo "Free some space, or point CARGO_TARGET_DIR at a larger filesystem" \
      "(BUILD_SPACE_NEEDED_MB overrides the estimate)." >&2
    return 1
  fi
  echo "build space: ${have_mb} MB free, ${used_mb} MB already built, ~${BUILD_SPACE_NEEDED_MB} MB needed"
}
