#!/usr/bin/env bash
# Submit one job to hpc-bridge with curl: a binary-mode CloudEvent of type
# hpcbridge.job.requested (the attributes as ce-* headers, the JobRequest as the JSON body).
#
#   usage: submit.sh [-f REQUEST_FILE] [BROKER_URL]
#
#   BROKER_URL    where to POST the event; default: $HPCBRIDGE_BROKER. In Knative, the
#                 Broker's address: kubectl get broker hpc-bridge -n hpc-bridge \
#                   -o jsonpath='{.status.address.url}'
#   REQUEST_FILE  the JobRequest, a JSON object (docs/events.md); default: standard input
#
#   echo '{"target": "local", "command": ["echo", "hello"]}' | submit.sh http://127.0.0.1:8080/
#
# It prints the job id and nothing else on standard output, so that
#   JOB_ID=$(submit.sh "$BROKER" < request.json)
# works. Exit status: 0 the event was accepted, 1 it was refused or could not be
# delivered, 2 a mistake in how the script was called (nothing was sent).
#
# Why the script chooses the job id: a Broker answers 202 with an empty body, so nothing
# tells the sender which job its event became. Without a `job_id`, the bridge derives one
# from the event's source and id (a hash, an implementation detail not to be recomputed
# here), so the script puts an explicit `job_id` in every request that has none. Talking
# to the submit function directly (no Broker in between, e.g. `hpc-bridge dev`'s submit
# URL), the answer is the reply event itself: its ce-subject header is the job id, and the
# script prints that.
#
# No part of the request is ever turned into shell code: the JSON is read and changed by
# jq (--arg passes values as data), sent by curl from a file, and the only value that goes
# into a header, the job id, is checked against the bridge's job id alphabet first.
# Needs bash, curl and jq.
set -euo pipefail

usage() {
  echo "usage: submit.sh [-f REQUEST_FILE] [BROKER_URL]   (the request on stdin without -f;" \
       "BROKER_URL defaults to \$HPCBRIDGE_BROKER)" >&2
}

fail() {
  echo "submit.sh: $*" >&2
  exit 1
}

request_file=-
while getopts "f:h" option; do
  case $option in
    f) request_file=$OPTARG ;;
    h) usage; exit 0 ;;
    *) usage; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [ $# -gt 1 ]; then
  usage
  exit 2
fi
broker=${1:-${HPCBRIDGE_BROKER:-}}
if [ -z "$broker" ]; then
  usage
  exit 2
fi
for tool in curl jq; do
  command -v "$tool" >/dev/null || { echo "submit.sh: $tool is needed" >&2; exit 2; }
done

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT

if [ "$request_file" = - ]; then
  cat >"$work/given.json"
elif ! cp -- "$request_file" "$work/given.json"; then
  exit 2
fi
if ! jq -e 'type == "object"' "$work/given.json" >/dev/null 2>&1; then
  echo "submit.sh: the request must be a JSON object (a JobRequest)" >&2
  exit 2
fi

job_id=$(jq -r '.job_id // empty' "$work/given.json")
if [ -z "$job_id" ]; then
  job_id="curl-$(od -An -N10 -tx1 /dev/urandom | tr -d ' \n')"
fi
# The bridge refuses any other job id anyway; checking here also keeps a CR or LF out of
# the ce-subject header below.
if ! [[ $job_id =~ ^[a-z0-9]([-a-z0-9]{0,51}[a-z0-9])?$ ]]; then
  echo "submit.sh: job_id must be 1-53 lower-case letters, digits and '-'," \
       "starting and ending with a letter or digit" >&2
  exit 2
fi
jq --arg id "$job_id" '.job_id = $id' "$work/given.json" >"$work/request.json"

# A fresh event id per run. Running the script again with the same job_id and request is
# harmless: the bridge answers a duplicate with the first job, never a second one.
event_id=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

if ! status=$(curl --silent --show-error --max-time 60 \
    --output "$work/answer" --dump-header "$work/headers" --write-out '%{http_code}' \
    --header 'ce-specversion: 1.0' \
    --header 'ce-type: hpcbridge.job.requested' \
    --header 'ce-source: /examples/curl/submit.sh' \
    --header "ce-id: $event_id" \
    --header "ce-subject: $job_id" \
    --header 'content-type: application/json' \
    --data-binary "@$work/request.json" \
    --url "$broker"); then
  fail "cannot reach $broker"
fi

# The value of a header of the answer (names are case-insensitive), without the CR.
header() {
  sed -n "s/^$1:[[:space:]]*//Ip" "$work/headers" | tr -d '\r' | tail -n 1
}

case $status in
  2??)
    reply_type=$(header ce-type)
    if [ -n "$reply_type" ]; then
      # The submit function's own reply: hpcbridge.job.submitted, or hpcbridge.job.failed
      # when the target refused the job (its reason is submit_error).
      job_id=$(header ce-subject)
      if [ "$reply_type" != hpcbridge.job.submitted ]; then
        echo "submit.sh: the bridge answered $reply_type for $job_id" >&2
        echo "$job_id"
        exit 1
      fi
    fi
    echo "$job_id"
    ;;
  400)
    # hpcbridge.job.rejected: {"error": ..., "field": ...}; Knative does not retry it.
    fail "rejected: $(jq -r '[.field // empty, .error] | join(": ")' "$work/answer" 2>/dev/null \
      || cat "$work/answer")"
    ;;
  *)
    # 413: the event is too large. 503 (the submit function, directly): Redis or the
    # target is unreachable, or the target refused the bridge's credentials; a Broker
    # retries those by itself, with backoff.
    fail "HTTP $status from $broker: $(head -c 2000 "$work/answer")"
    ;;
esac
