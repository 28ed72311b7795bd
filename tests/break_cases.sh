# Shared by the "*_fails.sh" tests, which show that a validator fails, saying why, when one
# thing is broken. Sourced after the caller has set $tmp (a temporary directory) and defined
#   fresh  - makes clean copies of what is validated under $tmp
#   run    - runs the validator on the copies, output to $tmp/out
# then: expect_unbroken_passes WHAT; per case: fresh, break_file..., expect_fail NAME MESSAGE;
# and finally finish (prints the tally; its status is the test's).
passed=0 failed=0

# break_file FILE SED-EXPRESSION: edits the copy, and insists that the edit changed something
break_file() {
  local f=$1 expr=$2
  cp "$f" "$tmp/before"
  sed -i "$expr" "$f"
  if cmp -s "$f" "$tmp/before"; then
    echo "test setup: '$expr' changed nothing in $f" >&2
    exit 2
  fi
}

# expect_fail NAME MESSAGE: the validator exits 1 and prints MESSAGE
expect_fail() {
  local name=$1 message=$2 rc=0
  run || rc=$?
  if [[ $rc -eq 1 ]] && grep -qF -- "$message" "$tmp/out"; then
    echo "ok: $name (exit 1, says: $(grep -F -- "$message" "$tmp/out" | head -1))"
    passed=$((passed + 1))
  else
    echo "FAILED: $name: expected exit 1 with '$message', got exit $rc:" >&2
    tail -20 "$tmp/out" >&2
    failed=$((failed + 1))
  fi
}

# expect_unbroken_passes WHAT: clean copies pass, so a failure later comes from the breakage
expect_unbroken_passes() {
  fresh
  if run; then
    echo "ok: an unbroken copy passes"
    passed=$((passed + 1))
  else
    echo "FAILED: an unbroken copy of $1 does not pass:" >&2
    tail -20 "$tmp/out" >&2
    exit 1
  fi
}

finish() {
  echo "$passed passed, $failed failed"
  [[ $failed -eq 0 ]]
}
