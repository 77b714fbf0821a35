#!/usr/bin/env python3
"""Writes the labelled corpus (positives.txt, negatives.txt) the accuracy
test reads. Values are marked {{detector:value}}; negatives have no marks
and every detection in them is a false positive. Seeded: the output is
the same on every run. Hand-written lines are kept as they are."""
import os
import random

R = random.Random(1234)
HERE = os.path.dirname(os.path.abspath(__file__))


def luhn_complete(prefix, length):
    digits = [int(c) for c in prefix]
    while len(digits) < length - 1:
        digits.append(R.randrange(10))
    for check in range(10):
        d = digits + [check]
        s = 0
        for i, x in enumerate(reversed(d)):
            if i % 2 == 1:
                x *= 2
                if x > 9:
                    x -= 9
            s += x
        if s % 10 == 0:
            return "".join(map(str, d))


def luhn_bad(prefix, length):
    good = luhn_complete(prefix, length)
    last = (int(good[-1]) + 1 + R.randrange(9)) % 10
    return good[:-1] + str(last)


def group(num, sizes, sep):
    out, i = [], 0
    for s in sizes:
        out.append(num[i:i + s])
        i += s
    return sep.join(out)


def iban(cc, length):
    bban = "".join(str(R.randrange(10)) for _ in range(length - 4))
    rearranged = bban + cc + "00"
    n = int("".join(str(int(c, 36)) for c in rearranged))
    check = 98 - n % 97
    return "%s%02d%s" % (cc, check, bban)


def spaced(s):
    return " ".join(s[i:i + 4] for i in range(0, len(s), 4))


FIRST = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
         "ivan", "judy", "mallory", "oscar", "peggy", "trent", "victor"]
LAST = ["smith", "jones", "garcia", "miller", "davis", "lopez", "wilson",
        "o.brien", "nguyen", "kim"]
DOMAINS = ["example.com", "mail.example.org", "corp.example.co.uk",
           "example.io", "sub.example.de", "example-mail.net"]
CONTEXT = [
    "Please contact {} about the invoice.",
    "My details: {}",
    "({}) is the one to use",
    "Send it to {}, thanks!",
    "the user wrote '{}' in the form",
    "{}",
    "Forwarded from {} yesterday at noon.",
    "as discussed, {} should be on the list;",
]


def ctx(v):
    return R.choice(CONTEXT).format(v)


def mark(det, v):
    return "{{%s:%s}}" % (det, v)


def positives():
    out = []
    for _ in range(60):
        local = R.choice(FIRST) + R.choice([".", "_", "+", ""]) + \
            R.choice(LAST).replace(".", "")
        if R.random() < 0.3:
            local += str(R.randrange(100))
        if R.random() < 0.15:
            local = local.capitalize()
        out.append(ctx(mark("email", local + "@" + R.choice(DOMAINS))))
    phones = []
    for _ in range(12):
        phones.append("+1 (%d%02d) %d%02d-%04d" % (
            R.randrange(2, 10), R.randrange(100), R.randrange(2, 10),
            R.randrange(100), R.randrange(10000)))
        phones.append("%d%02d-%d%02d-%04d" % (
            R.randrange(2, 10), R.randrange(100), R.randrange(2, 10),
            R.randrange(100), R.randrange(10000)))
        phones.append("+44 20 %04d %04d" % (R.randrange(1000, 10000),
                                            R.randrange(10000)))
        phones.append("07%03d %06d" % (R.randrange(1000), R.randrange(10**6)))
        phones.append("06 %02d %02d %02d %02d" % tuple(
            R.randrange(100) for _ in range(4)))
        phones.append("+49 30 %08d" % R.randrange(10**7, 10**8))
        phones.append("+33 1 %02d %02d %02d %02d" % tuple(
            R.randrange(100) for _ in range(4)))
        phones.append("(%d%02d) %d%02d %04d" % (
            R.randrange(2, 10), R.randrange(100), R.randrange(2, 10),
            R.randrange(100), R.randrange(10000)))
        phones.append("+91 %05d %05d" % (R.randrange(70000, 100000),
                                         R.randrange(10**5)))
        phones.append("030/%07d" % R.randrange(10**6, 10**7))
        a, b, c = (R.randrange(200, 1000), R.randrange(200, 1000),
                   R.randrange(10000))
        phones.append(R.choice(["+1-%d-%d-%04d", "+1.%d.%d.%04d",
                                "(%d)%d-%04d", "%d.%d.%04d",
                                "1-%d-%d-%04d"]) % (a, b, c))
    for p in phones:
        out.append(ctx(mark("phone", p)))
    cards = []
    for _ in range(10):
        cards.append(group(luhn_complete("4", 16), [4, 4, 4, 4], " "))
        cards.append(group(luhn_complete("5" + str(R.randrange(1, 6)), 16),
                           [4, 4, 4, 4], "-"))
        cards.append(luhn_complete("37", 15))
        cards.append(group(luhn_complete("34", 15), [4, 6, 5], " "))
        cards.append(luhn_complete("6011", 16))
        cards.append(group(luhn_complete("2221", 16), [4, 4, 4, 4], " "))
    for c in cards:
        out.append(ctx(mark("card", c)))
    for cc, n in [("DE", 22), ("GB", 22), ("FR", 27), ("NL", 18),
                  ("ES", 24), ("IT", 27), ("CH", 21), ("BE", 16)] * 6:
        if cc in ("GB", "NL"):
            bank = "".join(R.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
                           for _ in range(4))
            body = bank + "".join(str(R.randrange(10))
                                  for _ in range(n - 8))
            rearranged = body + cc + "00"
            num = int("".join(str(int(c, 36)) for c in rearranged))
            v = "%s%02d%s" % (cc, 98 - num % 97, body)
        else:
            v = iban(cc, n)
        out.append(ctx(mark("iban", spaced(v) if R.random() < 0.5 else v)))
    for _ in range(60):
        area = R.choice([x for x in range(1, 900) if x != 666])
        sep = R.choice(["-", " "])
        v = "%03d%s%02d%s%04d" % (area, sep, R.randrange(1, 100), sep,
                                  R.randrange(1, 10000))
        out.append(ctx(mark("ssn", v)))
    for _ in range(40):
        v = "%d.%d.%d.%d" % (R.randrange(1, 224), R.randrange(256),
                             R.randrange(256), R.randrange(1, 255))
        out.append(ctx(mark("ipv4", v)))
    v6 = ["2001:db8::8a2e:370:7334", "fe80::1ff:fe23:4567:890a",
          "2001:0db8:85a3:0000:0000:8a2e:0370:7334", "2a00:1450:4001:82a::200e",
          "fd12:3456:789a:1::1", "2606:4700:4700::1111",
          "2001:db8:0:0:1:0:0:1", "::ffff:192.0.2.128", "2001:db8::",
          "fe80::a00:27ff:fe4e:66a1"] * 4
    for v in v6:
        out.append(ctx(mark("ipv6", v)))
    secrets = ["AKIA" + "".join(R.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
                                for _ in range(16)) for _ in range(8)]
    alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

    def rnd(n, chars=alnum):
        return "".join(R.choice(chars) for _ in range(n))
    secrets += ["sk-" + rnd(48) for _ in range(6)]
    secrets += ["sk-proj-" + rnd(40) for _ in range(4)]
    secrets += ["ghp_" + rnd(36) for _ in range(6)]
    secrets += ["xoxb-" + rnd(12, "0123456789") + "-" + rnd(24)
                for _ in range(4)]
    secrets += ["AIza" + rnd(35) for _ in range(4)]
    secrets += ["sk_live_" + rnd(24) for _ in range(4)]
    secrets += ["eyJ" + rnd(20) + ".eyJ" + rnd(30) + "." + rnd(43)
                for _ in range(4)]
    for s in secrets:
        out.append(ctx(mark("secret", s)))
    for _ in range(4):
        out.append("Authorization: Bearer " + mark("secret", rnd(32)))
        out.append("api_key=" + mark("secret", rnd(28)))
        out.append('"password": "' + mark("secret", rnd(14) + "9!") + '"')
    for _ in range(6):
        body = "\\n".join(rnd(64, alnum + "+/") for _ in range(3))
        out.append("here: " + mark(
            "secret", "-----BEGIN PRIVATE KEY-----\\n" + body +
            "\\n-----END PRIVATE KEY-----") + " end")
    # Lines with several values.
    for _ in range(10):
        out.append("Customer %s, phone %s, card %s." % (
            mark("email", R.choice(FIRST) + "@" + R.choice(DOMAINS)),
            mark("phone", "+1 415 %03d %04d" % (R.randrange(200, 1000),
                                               R.randrange(10000))),
            mark("card", group(luhn_complete("4", 16), [4, 4, 4, 4], " "))))
    return out


def negatives():
    out = []
    for _ in range(40):
        out.append("Order #%d shipped on %04d-%02d-%02d." % (
            R.randrange(10**8, 10**10), R.randrange(2000, 2030),
            R.randrange(1, 13), R.randrange(1, 29)))
        out.append("Invoice INV-%d-%05d is due %02d/%02d/%04d" % (
            R.randrange(2015, 2030), R.randrange(10**5), R.randrange(1, 13),
            R.randrange(1, 29), R.randrange(2000, 2030)))
        out.append("Upgrade to version %d.%d.%d (build %d.%d.%d.%d)" % (
            R.randrange(10), R.randrange(30), R.randrange(100),
            R.randrange(1, 30), R.randrange(10), R.randrange(256, 40000),
            R.randrange(100)))
        out.append("Card number %s was declined" % group(
            luhn_bad("4", 16), [4, 4, 4, 4], " "))
        out.append("Tracking 1Z%s, ref %d" % (
            "".join(R.choice("0123456789ABCDEF") for _ in range(16)),
            R.randrange(10**6, 10**9)))
        out.append("Meeting at %02d:%02d:%02d on %02d.%02d.%04d" % (
            R.randrange(24), R.randrange(60), R.randrange(60),
            R.randrange(1, 29), R.randrange(1, 13), R.randrange(2000, 2030)))
        out.append("Ticket ID %d%d, customer no. %d" % (
            R.randrange(1000, 9999), R.randrange(10**5, 10**6),
            R.randrange(10**6, 10**8)))
        out.append("SKU %d-%d, batch %d" % (
            R.randrange(10**4, 10**5), R.randrange(10, 100),
            R.randrange(10**9, 10**10)))
        out.append("Total: $%d,%03d.%02d for %d items" % (
            R.randrange(1, 999), R.randrange(1000), R.randrange(100),
            R.randrange(1, 50)))
        out.append("Pi is 3.14159265358979 and e is 2.71828182845904")
    for _ in range(30):
        out.append("Account %d%d%d%d is closed" % tuple(
            R.randrange(1000, 10000) for _ in range(4)))
        out.append("SSN-like but invalid: %03d-%02d-%04d" % (
            R.choice([0, 666, R.randrange(900, 1000)]), R.randrange(100),
            R.randrange(10000)))
        out.append("IBAN typo DE%02d %04d %04d %04d %04d %02d" % (
            R.randrange(100), R.randrange(10000), R.randrange(10000),
            R.randrange(10000), R.randrange(10000), R.randrange(100)))
        out.append("Call extension %d or press %d" % (R.randrange(100, 9999),
                                                      R.randrange(10)))
        out.append("Shipment %d.%d.%d.%d.%d" % tuple(
            R.randrange(1, 99) for _ in range(5)))
        out.append("Coordinates %d.%06d, -%d.%06d" % (
            R.randrange(90), R.randrange(10**6), R.randrange(180),
            R.randrange(10**6)))
        out.append("Phone-like ID %d%d%d" % (R.randrange(100, 1000),
                                             R.randrange(100, 1000),
                                             R.randrange(1000, 10000)))
        out.append("Date range 20%02d-%02d-%02d to 20%02d-%02d-%02d" % (
            R.randrange(30), R.randrange(1, 13), R.randrange(1, 29),
            R.randrange(30), R.randrange(1, 13), R.randrange(1, 29)))
    for _ in range(20):
        out.append("ISBN 978-%d-%02d-%06d-%d" % (
            R.randrange(10), R.randrange(100), R.randrange(10**6),
            R.randrange(10)))
        out.append("MAC %s on eth0" % ":".join(
            "%02X" % R.randrange(256) for _ in range(6)))
        out.append("commit %s fixes it" % "".join(
            R.choice("0123456789abcdef") for _ in range(40)))
        out.append("at %d ms since the epoch" % R.randrange(
            1600000000000, 1800000000000))
        out.append("color #%06x, size %dx%d" % (
            R.randrange(1 << 24), R.randrange(100, 4000),
            R.randrange(100, 4000)))
        out.append("Room %d-%d, floor %d" % (R.randrange(100, 999),
                                             R.randrange(10, 99),
                                             R.randrange(1, 40)))
        out.append("Score %d:%d after %d.%d overs" % (
            R.randrange(10), R.randrange(10), R.randrange(50),
            R.randrange(6)))
    out += [
        "The variable api_key holds your key; set it in config.",
        "Use the password field on the login page.",
        "Email me at the usual address, not here.",
        "user@localhost is not a real address",
        "See section 4.2.1 and RFC 5322.",
        "The ratio was 1:2:3:4 in the test.",
        "Time stamps 12:30:45 and 23:59:59.",
        "C++ std::vector<int>::iterator",
        "The function a::b::c() returns void",
        "Versions 10.0.19041.1 and 1.2.3-beta",
        "Port 8080 on localhost",
        "Math: 4111 + 1111 = 5222",
        "sk-short is not a key",
        "The token shape is ghp_ followed by 36 characters",
        "A hash: 5d41402abc4b2a76b9719d911017c592",
        "UUID 123e4567-e89b-12d3-a456-426614174000",
        "Bearer tokens go in the Authorization header",
    ]
    return out


with open(os.path.join(HERE, "positives.txt"), "w") as f:
    f.write("\n".join(positives()) + "\n")
with open(os.path.join(HERE, "negatives.txt"), "w") as f:
    f.write("\n".join(negatives()) + "\n")
