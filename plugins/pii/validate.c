/* Validators: a regex finds things shaped like PII, these decide whether
 * the thing is real (a checksum, a range, a length), which is what keeps
 * order numbers, dates and versions out of the redactions. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem, inet_pton under -std=c11 */
#endif
#include "pii.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <string.h>

/* The digits of s (at most cap), the count in *nd. */
static void
digits_of(const char *s, size_t n, char *out, size_t cap, size_t *nd) {
    size_t k = 0;
    for (size_t i = 0; i < n && k < cap; i++)
        if (isdigit((unsigned char)s[i]))
            out[k++] = s[i];
    *nd = k;
}

int
pii_luhn_ok(const char *s, size_t n) {
    int sum = 0, dbl = 0;
    size_t nd = 0;
    for (size_t i = n; i-- > 0;) {
        if (!isdigit((unsigned char)s[i]))
            continue;
        int d = s[i] - '0';
        if (dbl && (d *= 2) > 9)
            d -= 9;
        sum += d;
        dbl = !dbl;
        nd++;
    }
    return nd > 0 && sum % 10 == 0;
}

/* Issuer prefixes and lengths of the card networks people actually paste
 * (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro). */
static int
card_prefix_ok(const char *d, size_t nd) {
    int p2 = (d[0] - '0') * 10 + (d[1] - '0');
    int p3 = p2 * 10 + (d[2] - '0');
    int p4 = p3 * 10 + (d[3] - '0');
    if (d[0] == '4') /* Visa */
        return nd == 13 || nd == 16 || nd == 19;
    if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720)) /* MC */
        return nd == 16;
    if (p2 == 34 || p2 == 37) /* Amex */
        return nd == 15;
    if (p4 == 6011 || p2 == 65 || (p3 >= 644 && p3 <= 649)) /* Discover */
        return nd >= 16;
    if (p4 >= 3528 && p4 <= 3589) /* JCB */
        return nd >= 16;
    if ((p3 >= 300 && p3 <= 305) || p2 == 36 || p2 == 38 || p2 == 39)
        return nd == 14 || nd == 16; /* Diners */
    if (p2 == 62)                    /* UnionPay */
        return nd >= 16;
    if (p4 == 5018 || p4 == 5020 || p4 == 5038 || p4 == 5893 || p4 == 6304 ||
        p4 == 6759 || (p4 >= 6761 && p4 <= 6763)) /* Maestro */
        return nd >= 12;
    return 0;
}

int
pii_card_ok(const char *s, size_t n) {
    char d[32];
    size_t nd;
    digits_of(s, n, d, sizeof(d), &nd);
    if (nd < 13 || nd > 19 || !card_prefix_ok(d, nd))
        return 0;
    /* One separator kind at most: "4111 1111-1111 1111" is not typed. */
    char sep = 0;
    for (size_t i = 0; i < n; i++) {
        if (isdigit((unsigned char)s[i]))
            continue;
        if (sep != 0 && s[i] != sep)
            return 0;
        sep = s[i];
    }
    /* A run of one digit is a serial, not a card. */
    size_t same = 1;
    for (size_t i = 1; i < nd; i++)
        same += d[i] == d[0];
    if (same == nd)
        return 0;
    return pii_luhn_ok(d, nd);
}

/* ISO 13616 lengths by country, for the countries that use IBAN. */
static const char iban_lengths[] =
    "AD24AE23AL28AT20AZ28BA20BE16BG22BH22BR29CH21CR22CY28CZ24DE22DK18DO28"
    "EE20EG29ES24FI18FO18FR27GB22GE22GI23GL18GR27GT28HR21HU28IE22IL23IQ23"
    "IS26IT27JO30KW30KZ20LB28LC32LI21LT20LU20LV21MC27MD24ME22MK19MR27MT31"
    "MU30NL18NO15PK24PL28PS29PT25QA29RO24RS22SA24SC31SE24SI19SK24SM27ST25"
    "SV28TL23TN24TR26UA29VA22VG24XK20";

int
pii_iban_ok(const char *s, size_t n) {
    char c[40];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ')
            continue;
        if (k == sizeof(c) || !isalnum((unsigned char)s[i]))
            return 0;
        c[k++] = (char)toupper((unsigned char)s[i]);
    }
    if (k < 15 || k > 34)
        return 0;
    int want = 0;
    for (const char *p = iban_lengths; *p; p += 4)
        if (p[0] == c[0] && p[1] == c[1])
            want = (p[2] - '0') * 10 + (p[3] - '0');
    if (want != (int)k)
        return 0;
    /* mod 97 of the rearranged number, digit by digit (letters are two
     * digits: A=10 .. Z=35). */
    unsigned rem = 0;
    for (size_t i = 0; i < k; i++) {
        char ch = c[(i + 4) % k];
        if (isdigit((unsigned char)ch))
            rem = (rem * 10 + (unsigned)(ch - '0')) % 97;
        else
            rem = (rem * 100 + (unsigned)(ch - 'A' + 10)) % 97;
    }
    return rem == 1;
}

/* SSA rules: area 001-899 but not 666, group 01-99, serial 0001-9999;
 * and the numbers that were burned by being printed in ads. */
int
pii_ssn_ok(const char *s, size_t n) {
    char d[16];
    size_t nd;
    digits_of(s, n, d, sizeof(d), &nd);
    if (nd != 9)
        return 0;
    int area = (d[0] - '0') * 100 + (d[1] - '0') * 10 + (d[2] - '0');
    int group = (d[3] - '0') * 10 + (d[4] - '0');
    int serial = ((d[5] - '0') * 1000 + (d[6] - '0') * 100 + (d[7] - '0') * 10 +
                  (d[8] - '0'));
    if (area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0)
        return 0;
    if (memcmp(d, "078051120", 9) == 0 || memcmp(d, "219099999", 9) == 0 ||
        memcmp(d, "123456789", 9) == 0)
        return 0;
    return 1;
}

/* E.164 allows 15 digits; below 8 it is an extension or a short code. A
 * national number without "+" must show a separator or parentheses: a
 * bare run of digits is far more often an ID than a phone. */
int
pii_phone_ok(const char *s, size_t n) {
    char d[32];
    size_t nd;
    digits_of(s, n, d, sizeof(d), &nd);
    if (nd < 8 || nd > 15)
        return 0;
    size_t seps = 0;
    for (size_t i = 0; i < n; i++)
        seps += !isdigit((unsigned char)s[i]) && s[i] != '+';
    if (s[0] != '+' && seps == 0)
        return 0;
    /* 2023-10-12 and 12.10.2023 style dates: 8 digits in 4-2-2 or 2-2-4
     * groups with one separator kind. */
    if (nd == 8 && seps == 2 && s[0] != '+' && s[0] != '(') {
        size_t g[3] = {0, 0, 0}, gi = 0;
        for (size_t i = 0; i < n && gi < 3; i++) {
            if (isdigit((unsigned char)s[i]))
                g[gi]++;
            else
                gi++;
        }
        if ((g[0] == 4 && g[1] == 2 && g[2] == 2) ||
            (g[0] == 2 && g[1] == 2 && g[2] == 4))
            return 0;
    }
    /* All one digit, or 0123456789-like runs, are placeholders. */
    size_t same = 1;
    for (size_t i = 1; i < nd; i++)
        same += d[i] == d[0];
    return same != nd;
}

int
pii_ipv4_ok(const char *s, size_t n) {
    int parts = 0, val = 0, len = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '.') {
            if (len == 0 || val > 255 || (len > 1 && s[i - len] == '0'))
                return 0;
            parts++;
            val = len = 0;
            continue;
        }
        if (!isdigit((unsigned char)s[i]) || ++len > 3)
            return 0;
        val = val * 10 + (s[i] - '0');
    }
    return parts == 4;
}

int
pii_ipv6_ok(const char *s, size_t n) {
    char buf[64];
    unsigned char out[16];
    if (n < 3 || n >= sizeof(buf))
        return 0;
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (inet_pton(AF_INET6, buf, out) != 1)
        return 0;
    /* "::" and "::1" carry nothing about anyone; times like 10:30:00 are
     * refused by inet_pton already. */
    int hex = 0;
    for (size_t i = 0; i < n; i++)
        hex += isxdigit((unsigned char)s[i]) != 0;
    return hex >= 4;
}

int
pii_email_ok(const char *s, size_t n) {
    const char *at = memchr(s, '@', n);
    if (at == NULL || at == s || s[0] == '.' || at[-1] == '.')
        return 0;
    for (size_t i = 1; i < n; i++)
        if (s[i] == '.' && s[i - 1] == '.')
            return 0;
    return 1;
}

/* Tokens with a vendor's prefix are what they say; the keyword forms
 * ("password: ...", "Bearer ...") must look random: letters and digits
 * both. Keeps "api_key = your_api_key_here" style prose out. */
int
pii_secret_ok(const char *s, size_t n) {
    static const char *const prefixes[] = {
        "-----BEGIN", "AKIA", "ASIA", "sk-",         "ghp_", "gho_",
        "ghu_",       "ghs_", "ghr_", "github_pat_", "xox",  "AIza",
        "sk_",        "rk_",  "eyJ",  NULL};
    for (size_t i = 0; prefixes[i]; i++) {
        size_t k = strlen(prefixes[i]);
        if (n > k && memcmp(s, prefixes[i], k) == 0)
            return 1;
    }
    int alpha = 0, digit = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        alpha |= isalpha(c) != 0;
        digit |= isdigit(c) != 0;
    }
    return digit && alpha;
}
