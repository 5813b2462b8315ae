# encrypted_s3_backup in a container: cron runs the backup on a schedule, and the same image runs
# the script directly for a restore, a verify or a list. Configure it with environment variables
# (every config key, upper case, nesting as "_"; see README.md), for example:
#
#   docker build -t encrypted_s3_backup .
#   docker run -d --name backup --init \
#       -v /srv/data:/data:ro \
#       -e SRC_LOCAL_PATH=/data \
#       -e DEST_S3_BUCKET=my-backups -e DEST_AWS_ACCESS_KEY_ID=... -e DEST_AWS_SECRET_ACCESS_KEY=... \
#       -e ENCRYPTION_PASSWORD='a long passphrase' \
#       -e CRONTAB='0 3 * * *' -e TZ=Europe/Berlin \
#       encrypted_s3_backup
#   docker logs -f backup        # the schedule and time zone at start, then every run's output
#
# CRONTAB is the 5-field cron schedule (default "0 * * * *", hourly; @daily style works too) and
# TZ the time zone it is read in (default UTC). A run is skipped while the previous one is still
# going. Keep the variables in a file with `--env-file backup.env` to keep the password out of
# your shell history. A config.json mounted at /app/config.json works too; variables override it.
# To hear how each run went: HEALTHCHECK_URL (pinged at start and end, /fail on a failure or a
# skipped run), NOTIFY_URL (a JSON webhook), METRICS_FILE (a Prometheus textfile in a mounted
# folder). PRE_COMMAND and POST_COMMAND run around each backup, and BANDWIDTH_LIMIT (e.g. 2M)
# caps its transfers. See README.md, Monitoring.
#
# With a command, the image runs it instead of cron (same variables):
#   docker run --rm --env-file backup.env encrypted_s3_backup python3 /app/encrypted_s3_backup.py --verify
#   docker run --rm --env-file backup.env -v /srv/restore:/restore -e RESTORE_LOCAL_PATH=/restore \
#       encrypted_s3_backup python3 /app/encrypted_s3_backup.py --restore
#   docker run --rm encrypted_s3_backup python3 /app/generate_salt.py
FROM python:3.12-slim

# cron runs the schedule, tzdata makes TZ work. The daily/hourly jobs Debian ships with cron
# are removed: the backup is the only job and the log shows only its output.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cron tzdata \
    && rm -rf /var/lib/apt/lists/* /etc/cron.d/* /etc/cron.hourly/* /etc/cron.daily/* \
        /etc/cron.weekly/* /etc/cron.monthly/*

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# Dependencies first, so editing the script does not reinstall them.
COPY requirements.txt /app/requirements.txt
RUN pip install --no-cache-dir -r /app/requirements.txt

COPY encrypted_s3_backup.py generate_salt.py crontab.sh /app/
# The existing tool's image kept the script at /encrypted_s3_backup.py: its commands still work.
RUN chmod 0755 /app/crontab.sh /app/encrypted_s3_backup.py /app/generate_salt.py \
    && ln -s /app/encrypted_s3_backup.py /encrypted_s3_backup.py

WORKDIR /app
ENTRYPOINT ["/app/crontab.sh"]
