# Check "run" (sourced by tests/vm/guest.sh): `pinfold run` of a two-step
# job on the plain busybox image (payload job-layout, pinned by digest):
# step 1 writes an artifact and a file in the rootfs, step 2 reads both;
# as the user and as root. Writes run-WHO.{json,err,rc} (--json summary)
# and run-WHO.artifacts (each file under --out with its contents).
for who in user root; do
  w=/var/tmp/pv-$who
  image="oci:$w/job-layout@$(cat "$w/job-image.digest")"
  asu $who mkdir -p "$w/job-src"
  echo "vm-source" | asu $who sh -c "cat >$w/job-src/message.txt"
  asu $who sh -c "cat >$w/job.yaml" <<JOB
image: $image
policy: default
timeout: 2m
steps:
  - name: build
    run: |
      mkdir -p out && echo "built from \$(cat message.txt)" > out/result.txt
      echo "step 1 was here" > /etc/built-by-step-1
  - name: test
    run: |
      cat /etc/built-by-step-1
      grep -q "built from vm-source" out/result.txt
artifacts: [out/*]
JOB
  pf $who run "$w/job.yaml" --source "$w/job-src" --out "$w/job-out" --json \
    >"$out/run-$who.json" 2>"$out/run-$who.err" </dev/null
  echo $? >"$out/run-$who.rc"
  find "$w/job-out" -path '*/out/*' -type f -exec grep -H . {} + >"$out/run-$who.artifacts" 2>&1
done
