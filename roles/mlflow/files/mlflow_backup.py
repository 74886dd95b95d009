"""Copy the MLflow tracking database (SQLite's online backup, safe while the server writes) into S3.

Run by the mlflow-backup unit (as the MLflow user, with the server's S3 environment) after each train.yml run:
    mlflow_backup.py --db /var/lib/mlflow/mlflow.db --copy /var/lib/mlflow/mlflow.db.backup --bucket B --key K
Prints one line: where the copy went and its S3 version id. Exit 1 with one sentence when it cannot.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--copy", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    if not os.path.exists(args.db):
        print(f"no database at {args.db} yet (the server creates it on its first start)", file=sys.stderr)
        return 1
    try:
        source = sqlite3.connect(f"file:{args.db}?mode=ro", uri=True)
        target = sqlite3.connect(args.copy)
        with target:
            source.backup(target)
        source.close()
        target.close()
        import boto3

        endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None
        s3 = boto3.client("s3", endpoint_url=endpoint)
        with open(args.copy, "rb") as body:
            put = s3.put_object(Bucket=args.bucket, Key=args.key, Body=body)
    except Exception as err:  # one sentence for the journal and train.yml
        print(
            f"cannot back up {args.db} to s3://{args.bucket}/{args.key} ({type(err).__name__}: {err})",
            file=sys.stderr,
        )
        return 1
    finally:
        if os.path.exists(args.copy):
            os.remove(args.copy)
    print(f"backed up {args.db} to s3://{args.bucket}/{args.key} (version {put.get('VersionId')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
