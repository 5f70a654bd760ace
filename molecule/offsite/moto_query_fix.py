"""A fix to the S3 stand-in, applied before it starts: moto (5.x) checks a request's
signature against the query string as it received it decoded, where AWS (and every client:
restic, botocore, djangoops.s3) signs it encoded, so any request whose query holds a "/"
(restic's listings: prefix=keys/) fails its signature check once moto enforces them. This
re-encodes the query as AWS's canonical request does. Idempotent; run with the moto
virtualenv's python."""

import inspect

from moto.core import authorization

path = inspect.getsourcefile(authorization)
with open(path, encoding="utf-8") as f:
    source = f.read()
old = 'path += "?" + parsed_url.query'
new = (
    'path += "?" + "&".join(__import__("urllib.parse").parse.quote(k, safe="-_.~") + "=" + '
    '__import__("urllib.parse").parse.quote(v, safe="-_.~") for k, v in '
    '__import__("urllib.parse").parse.parse_qsl(parsed_url.query, keep_blank_values=True))'
)
if new not in source:
    if source.count(old) != 1:
        raise SystemExit(f"{path}: the line to fix is not there once; this moto needs another look")
    with open(path, "w", encoding="utf-8") as f:
        f.write(source.replace(old, new))
    print("fixed")
else:
    print("already fixed")
