"""What the notebook of a NotebookValidationJob does with its environment, run as a program.

It reads only its environment (ADR 017's variables: ``DB_*`` for PostgreSQL, ``RESULTS_DB_*`` for
MariaDB, ``AWS_*`` with ``AWS_REGION``; ``AWS_ENDPOINT_URL`` is the test's one localisation: where S3
is). It connects with that connection data alone, SELECTs, tries an INSERT, reads and tries to
write an S3 object, and prints one JSON line of outcomes (never a credential).

Usage: python notebook_consumer.py <bucket> <key>
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def postgres() -> dict[str, Any]:
    import psycopg

    with psycopg.connect(
        host=os.environ["DB_HOST"],
        port=int(os.environ["DB_PORT"]),
        dbname=os.environ["DB_NAME"],
        user=os.environ["DB_USERNAME"],
        password=os.environ["DB_PASSWORD"],
    ) as connection:
        row = connection.execute("SELECT value FROM app.metrics WHERE name = 'up'").fetchone()
        try:
            connection.execute("INSERT INTO app.metrics VALUES ('down', 0)")
            refused = None
        except psycopg.Error as exc:
            refused = type(exc).__name__
    return {"select": row[0] if row else None, "insert_refused": refused}


def mariadb() -> dict[str, Any]:
    import pymysql

    connection = pymysql.connect(
        host=os.environ["RESULTS_DB_HOST"],
        port=int(os.environ["RESULTS_DB_PORT"]),
        database=os.environ["RESULTS_DB_NAME"],
        user=os.environ["RESULTS_DB_USERNAME"],
        password=os.environ["RESULTS_DB_PASSWORD"],
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT ok FROM results WHERE run = 'r1'")
            row = cursor.fetchone()
            try:
                cursor.execute("INSERT INTO results VALUES ('r2', 0)")
                refused = None
            except pymysql.MySQLError as exc:
                refused = f"{type(exc).__name__}: {exc.args[1] if len(exc.args) > 1 else exc}"
    finally:
        connection.close()
    return {"select": row[0] if row else None, "insert_refused": refused}


def s3(bucket: str, key: str) -> dict[str, Any]:
    import boto3
    from botocore.exceptions import ClientError

    client = boto3.client("s3", region_name=os.environ["AWS_REGION"])  # keys and token: from the environment
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    try:
        client.put_object(Bucket=bucket, Key="runs/written-by-notebook.json", Body=b"{}")
        refused = None
    except ClientError as exc:
        refused = exc.response["Error"]["Code"]
    return {"get": body, "put_refused": refused}


def main() -> None:
    bucket, key = sys.argv[1], sys.argv[2]
    print(json.dumps({"postgres": postgres(), "mariadb": mariadb(), "s3": s3(bucket, key)}))


if __name__ == "__main__":
    main()
