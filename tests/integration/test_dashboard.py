"""The dashboard's files on the admin listener: public (the page itself
holds no data), embedded in the binary, read-only, with content types and a
policy that keeps the page to its own origin; the data stays behind the
token."""
from helpers import http
from test_reload import admin, admin_gateway


def get(gw, path, method="GET"):
    return http(gw.admin_port, method, path)


def test_page_and_assets_are_served_without_the_token(gateway):
    gw = admin_gateway(gateway)
    page = get(gw, "/dashboard")
    assert page.status == 200, page
    assert page.header("content-type") == "text/html; charset=utf-8"
    assert b"<title>Sluice dashboard</title>" in page.body
    assert get(gw, "/dashboard/").body == page.body
    assert get(gw, "/dashboard/index.html").body == page.body
    js = get(gw, "/dashboard/app.js")
    assert js.status == 200
    assert js.header("content-type") == "text/javascript; charset=utf-8"
    css = get(gw, "/dashboard/style.css")
    assert css.header("content-type") == "text/css; charset=utf-8"
    chart = get(gw, "/dashboard/chart.umd.js")
    assert chart.body.startswith(b"/*!\n * Chart.js v4.")
    assert int(chart.header("content-length")) == len(chart.body)


def test_page_loads_nothing_from_elsewhere(gateway):
    gw = admin_gateway(gateway)
    r = get(gw, "/dashboard")
    csp = r.header("content-security-policy")
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.header("x-content-type-options") == "nosniff"
    for name in ("index.html", "app.js", "style.css"):
        body = get(gw, "/dashboard/" + name).body
        assert b"http://" not in body and b"https://" not in body, name


def test_dashboard_is_read_only_and_knows_only_its_files(gateway):
    gw = admin_gateway(gateway)
    r = get(gw, "/dashboard", method="POST")
    assert r.status == 405 and r.header("allow") == "GET, HEAD"
    head = get(gw, "/dashboard/app.js", method="HEAD")
    assert head.status == 200 and head.body == b""
    for path in ("/dashboard/nope.js", "/dashboard/../metrics",
                 "/dashboard/embed.sh", "/dashboardx"):
        r = get(gw, path)
        assert r.status in (401, 404), (path, r)
        assert r.status == 404 or path == "/dashboardx"
    # A path beside /dashboard is an admin call, token and all.
    assert get(gw, "/dashboardx").status == 401


def test_data_calls_still_need_the_token(gateway):
    gw = admin_gateway(gateway)
    assert get(gw, "/metrics").status == 401
    assert get(gw, "/admin/providers").status == 401
    assert admin(gw, "GET", "/admin/providers").status == 200


def test_dashboard_is_not_on_the_client_listener(gateway):
    gw = admin_gateway(gateway)
    assert http(gw.port, "GET", "/dashboard").status == 404
