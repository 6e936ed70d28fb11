"""Signs in to the console and prints the session cookie (name=value).

Usage: console_login.py BASE ADMIN_TOKEN
"""
import http.client
import re
import sys
import urllib.parse

base, admin = sys.argv[1], sys.argv[2]
u = urllib.parse.urlparse(base)
c = http.client.HTTPConnection(u.hostname, u.port)
c.request("GET", "/ui/login")
r = c.getresponse()
html = r.read().decode()
login_cookie = r.getheader("Set-Cookie").split(";")[0]
csrf = re.search(r'name="csrf" value="([^"]+)"', html).group(1)
body = urllib.parse.urlencode({"token": admin, "csrf": csrf})
c.request("POST", "/ui/login", body=body,
          headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": login_cookie})
r = c.getresponse()
r.read()
session = [v for k, v in r.getheaders() if k.lower() == "set-cookie" and v.startswith("sk_session=")]
if r.status != 303 or not session:
    raise SystemExit(f"sign-in failed: {r.status}")
print(session[0].split(";")[0])
