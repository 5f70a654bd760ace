"""The bucket owner's part, done once on the S3 stand-in (moto, on the backup host) before
anything else reaches it: per server, an IAM user whose key may only read, write and list
its bucket, and delete under locks/ (what restic needs to push: the policy the README
gives), and an owner whose key may do anything to that bucket. Prints their keys as JSON
for the inventory; then moto checks every request's signature and policy.
Run with the moto virtualenv's python: python s3_accounts.py ENDPOINT SERVER..."""

import json
import sys
import urllib.request

import boto3

endpoint, servers = sys.argv[1], sys.argv[2:]
iam = boto3.client(
    "iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
)


def user(name, statements):
    iam.create_user(UserName=name)
    iam.put_user_policy(
        UserName=name,
        PolicyName=f"{name}-bucket",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}),
    )
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return [key["AccessKeyId"], key["SecretAccessKey"]]


keys = {}
for server in servers:
    bucket = f"arn:aws:s3:::{server}"
    keys[server] = {
        "server": user(
            f"server-{server}",
            [
                {
                    "Effect": "Allow",
                    "Action": [
                        "s3:ListBucket",
                        "s3:HeadBucket",
                        "s3:GetBucketLocation",
                        "s3:ListBucketVersions",
                        "s3:GetBucketVersioning",
                    ],
                    "Resource": bucket,
                },
                {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": f"{bucket}/*"},
                {"Effect": "Allow", "Action": "s3:DeleteObject", "Resource": f"{bucket}/locks/*"},
            ],
        ),
        "admin": user(f"owner-{server}", [{"Effect": "Allow", "Action": "s3:*", "Resource": [bucket, f"{bucket}/*"]}]),
    }
# From now on every request is signed by one of these keys and allowed by its policy.
urllib.request.urlopen(
    urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
    )
)
print(json.dumps(keys))
