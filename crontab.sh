#!/usr/bin/env bash
# Entrypoint of the encrypted_s3_backup Docker image. Three modes:
#
#   crontab.sh                      start cron: write the container's environment to an env file
#                                   (mode 0600), install the schedule from CRONTAB (default
#                                   "0 * * * *"), print the schedule and time zone, run `cron -f`.
#   crontab.sh __cron_job__ [FILE]  one scheduled run (what the installed crontab line calls):
#                                   load the env file, skip the run if the previous one still
#                                   holds the lock (and report the skip to the monitors:
#                                   the script's --report-skipped), else run the backup with its
#                                   output in the container log. "__cron_job__" is a reserved
#                                   word, not a command.
#   crontab.sh COMMAND [ARG...]     run that command instead of cron, e.g.
#                                   docker run --rm -e ... IMAGE python3 /app/encrypted_s3_backup.py --verify
#
# Overridable paths and programs (defaults are the image's; the tests point them elsewhere):
#   ESB_ENV_FILE  /app/cron.env                  the environment handed to each run
#   ESB_LOCK_FILE /run/encrypted_s3_backup.lock  held (flock) only while a run is going
#   ESB_SCRIPT    /app/encrypted_s3_backup.py    ESB_PYTHON python3    ESB_CRON cron
#   ESB_LOG_OUT   /proc/1/fd/1                   ESB_LOG_ERR /proc/1/fd/2  (the container log)
#   ESB_LOCALTIME /etc/localtime                 linked to TZ's zone file, so cron's schedule uses TZ
set -euo pipefail
shopt -s inherit_errexit

readonly JOB_WORD=__cron_job__
readonly DEFAULT_SCHEDULE='0 * * * *'
readonly ZONEINFO=/usr/share/zoneinfo
# Not handed to the job: cron sets its own HOME and shell variables, the others describe this
# shell or the container's terminal, and bash refuses to assign the read-only ones.
readonly NOT_PASSED=' HOSTNAME HOME PWD OLDPWD SHLVL _ TERM BASHOPTS SHELLOPTS BASH_ENV ENV UID EUID PPID '

log() { printf '[%(%Y-%m-%dT%H:%M:%S)T] %s\n' -1 "$*"; }
die() { # die CODE MESSAGE: one line on stderr, then exit
    printf 'crontab.sh: %s\n' "$2" >&2
    exit "$1"
}

# Quote one word for the /bin/sh that cron runs the crontab line with. Cron turns an
# unescaped % into a newline, so each % is escaped as \% (cron removes the backslash).
sh_quote() {
    local s=${1//\'/\'\\\'\'}
    printf "'%s'" "${s//%/\\%}"
}

# Print CRONTAB's schedule with its whitespace normalised, or fail: five fields made of
# digits, names, * , - and /, or one @keyword.
check_schedule() {
    local raw=$1 field
    local -a fields
    read -r -a fields <<<"$raw" || true
    case ${#fields[@]}:${fields[0]:-} in
        1:@reboot | 1:@yearly | 1:@annually | 1:@monthly | 1:@weekly | 1:@daily | 1:@midnight | 1:@hourly)
            printf '%s' "${fields[0]}"
            return 0
            ;;
        5:*) ;;
        *) return 1 ;;
    esac
    for field in "${fields[@]}"; do
        [[ $field =~ ^[0-9A-Za-z*/,-]+$ ]] || return 1
    done
    printf '%s' "${fields[*]}"
}

# Write every exported variable except NOT_PASSED as `export NAME=<printf %q>`, so that
# `set -a; . FILE` (or plain `. FILE`) restores each value byte for byte. The file holds the
# encryption password and keys: it is created 0600 beside its final name and renamed.
write_env_file() {
    local file=$1 tmp name count=0
    tmp=$(umask 077 && mktemp "$file.XXXXXX")
    {
        printf '# Written by crontab.sh at container start: the environment of each backup run.\n'
        while IFS= read -r name; do
            [[ $NOT_PASSED == *" $name "* ]] && continue
            printf 'export %s=%q\n' "$name" "${!name-}"
            count=$((count + 1))
        done < <(compgen -e | LC_ALL=C sort)
    } >"$tmp"
    chmod 0600 "$tmp"
    mv -f "$tmp" "$file"
    printf '%s' "$count"
}

# The time zone's name: TZ, else /etc/timezone, else the abbreviation date prints.
zone_name() {
    local zone=''
    if [[ -n ${TZ:-} ]]; then
        zone=$TZ
    elif [[ -r /etc/timezone ]]; then
        read -r zone </etc/timezone || true
    fi
    [[ -n $zone ]] || zone=$(date +%Z)
    printf '%s' "$zone"
}

# With TZ naming a zone, point ESB_LOCALTIME at its file, so cron, which reads the local time
# zone, fires at TZ's hours. A TZ that names no zone file is reported: glibc would use UTC.
apply_zone() {
    local zone=${TZ:-} localtime=${ESB_LOCALTIME:-/etc/localtime}
    [[ -n $zone ]] || return 0
    zone=${zone#:}
    if [[ -f $ZONEINFO/$zone ]]; then
        ln -sfn "$ZONEINFO/$zone" "$localtime" 2>/dev/null ||
            log "warning: could not link $localtime to $ZONEINFO/$zone; cron keeps its own time zone"
    elif [[ $zone =~ ^[A-Za-z_+-]+(/[A-Za-z0-9_+-]+)*$ && ! $zone =~ [0-9] ]]; then
        log "warning: TZ='$TZ' is not a time zone in $ZONEINFO: times are in UTC (e.g. TZ=Europe/Berlin)"
    fi
}

start_cron() {
    local schedule env_file self crontab_file count zone
    schedule=$(check_schedule "${CRONTAB:-$DEFAULT_SCHEDULE}") ||
        die 2 "CRONTAB='${CRONTAB:-}' is not a cron schedule: give 5 fields, minute hour day-of-month month day-of-week (e.g. CRONTAB='0 3 * * *'), or one of @hourly @daily @weekly @monthly @yearly"
    env_file=${ESB_ENV_FILE:-/app/cron.env}
    self=$(readlink -f "${BASH_SOURCE[0]}")

    count=$(write_env_file "$env_file")
    apply_zone
    zone=$(zone_name)

    # The job's own redirections need the env file; these catch anything before that.
    crontab_file=$(mktemp)
    {
        printf '# Installed by crontab.sh from CRONTAB at container start.\n'
        printf '%s %s %s %s >>%s 2>>%s\n' "$schedule" "$(sh_quote "$self")" "$JOB_WORD" \
            "$(sh_quote "$env_file")" "$(sh_quote "${ESB_LOG_OUT:-/proc/1/fd/1}")" \
            "$(sh_quote "${ESB_LOG_ERR:-/proc/1/fd/2}")"
    } >"$crontab_file"
    crontab "$crontab_file"
    rm -f "$crontab_file"

    log "encrypted_s3_backup: backup schedule '$schedule' (CRONTAB), time zone $zone (now $(date '+%Y-%m-%d %H:%M %Z'))"
    log "environment for the runs ($count variables) written to $env_file (mode 0600)"
    log "next: cron starts now and runs the backup at each '$schedule'; each run's output appears in this log, and a run is skipped while the previous one is still going. Back up now with: docker exec CONTAINER $self $JOB_WORD"
    exec "${ESB_CRON:-cron}" -f
}

run_job() {
    local env_file=${1:-${ESB_ENV_FILE:-/app/cron.env}} rc=0 why
    [[ -r $env_file ]] ||
        die 2 "no environment file $env_file: start the container without a command first, it writes the file"
    set -a
    # shellcheck source=/dev/null
    . "$env_file"
    set +a
    exec >>"${ESB_LOG_OUT:-/proc/1/fd/1}" 2>>"${ESB_LOG_ERR:-/proc/1/fd/2}"

    # A runtime lock, not state: the kernel drops it when the run's processes end.
    exec 9>>"${ESB_LOCK_FILE:-/run/encrypted_s3_backup.lock}"
    if ! flock -n 9; then
        log "previous backup still running; skipping this run"
        # A run that did not happen is a failure to the monitors (HEALTHCHECK_URL's /fail
        # ping, NOTIFY_URL): a backup stuck for days must not look like a quiet success.
        why="previous run still going: the backup due at $(date '+%Y-%m-%dT%H:%M:%S') was skipped"
        "${ESB_PYTHON:-python3}" -u "${ESB_SCRIPT:-/app/encrypted_s3_backup.py}" \
            --report-skipped "$why" || true
        exit 0
    fi
    "${ESB_PYTHON:-python3}" -u "${ESB_SCRIPT:-/app/encrypted_s3_backup.py}" || rc=$?
    if ((rc != 0)); then
        log "backup exited with code $rc" >&2
    fi
    exit "$rc"
}

if (($# == 0)); then
    start_cron
elif [[ $1 == "$JOB_WORD" ]]; then
    shift
    run_job "$@"
else
    exec "$@"
fi
