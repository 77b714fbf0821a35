/* The prompt-injection detector. Attackers dodge word lists with case,
 * extra spaces ("i g n o r e"), leetspeak ("1gn0r3"), look-alike letters
 * from other scripts (Cyrillic "о" for "o") and invisible characters, so
 * the text is first folded to plain lower-case ASCII words; then weighted
 * phrasings are matched on that form, and a few high-signal ones also on
 * a "squashed" form without any spaces (which defeats "ig nore" and
 * "i.g.n.o.r.e"). One phrasing alone rarely proves an attack: weights add
 * up and the plugin compares the sum with its threshold. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "detect.h"

#include <pcre2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *id;     /* names the phrasing in logs */
    double weight;      /* what it adds to the score */
    const char *re;     /* on the normalised form (words, single spaces) */
    const char *squash; /* a literal on the squashed form, or NULL */
    /* Word starts, space-separated: every match of re holds one of them
     * at the start of a word of the normalised form, so a text without
     * any skips re (NULL: re always runs). Most prompts hold none of a
     * phrase's words: this prefilter spares them most pattern runs. */
    const char *words;
} phrase_t;

/* Verbs and objects that recur across phrasings. */
#define PRIOR "(?:previous|prior|above|earlier|preceding|foregoing|former|initial|original|existing|old|past|system|developer|all)"
#define INSTR "(?:instructions?|prompts?|rules?|directions?|directives?|guidelines?|commands?|orders?|context|programming|constraints?|restrictions?|messages?|guidance|policies|policy|training|settings?)"
#define ART "(?:(?:all|any|every|each|the|your|my|these|those|of|that|this|its|our) )*"
#define IGNORE "(?:ignore|disregard|forget|skip|drop|abandon|discard|bypass|override|overrule|neglect|dismiss|set aside|throw out|put aside|stop following|don t follow|do not follow|no longer follow|cancel)"
#define REVEAL "(?:reveal|print|show|display|repeat|output|tell|leak|dump|expose|disclose|give|share|recite|write out|spell out|paste|list)"

/* Word starts of which each alternative of IGNORE and REVEAL holds one. */
#define IGNORE_W                                                              \
    "ignore disregard forget skip drop abandon discard bypass overr neglect "  \
    "dismiss aside throw follow cancel"
#define REVEAL_W                                                              \
    "reveal print show display repeat output tell leak dump expose disclose "  \
    "give share recite write spell paste list"

static const phrase_t phrases[] = {
    /* "ignore all previous instructions" and its many cousins */
    {"ignore_previous", 1.0,
     "\\b" IGNORE " " ART PRIOR "(?: " PRIOR ")?(?: \\w+)? " INSTR "\\b",
     NULL,
     IGNORE_W},
    {"ignore_previous_squashed", 1.0, NULL, "ignoreallpreviousinstructions", NULL},
    {"ignore_previous_squashed2", 1.0, NULL, "ignorepreviousinstructions", NULL},
    {"ignore_previous_squashed3", 1.0, NULL, "disregardpreviousinstructions", NULL},
    {"ignore_previous_squashed4", 1.0, NULL, "ignoreyourinstructions", NULL},
    {"ignore_previous_squashed5", 1.0, NULL, "ignoreallinstructions", NULL},
    {"ignore_previous_squashed6", 1.0, NULL, "ignoretheaboveinstructions", NULL},
    {"ignore_your_rules", 1.0,
     "\\b" IGNORE " (?:all )?(?:of )?your (?:\\w+ )?(?:instructions|rules|"
     "guidelines|programming|training|restrictions|safety|directives|"
     "constraints|filters|principles|policies|policy|system prompt)\\b",
     NULL,
     IGNORE_W},
    {"ignore_rules_above", 1.0,
     "\\b" IGNORE " " ART "(?:\\w+ )?" INSTR " (?:above|before|earlier|so "
     "far|you were given|you have been given|provided)\\b",
     NULL,
     IGNORE_W},
    {"instructions_revoked", 1.0,
     "\\b(?:your |the |all |my )?(?:" PRIOR " )?" INSTR " (?:have been|are "
     "now|are|were|has been|is) (?:revoked|cancelled|canceled|void|lifted|"
     "removed|overridden|suspended|no longer valid|null and void)\\b",
     NULL,
     "revok cancel void lifted remov overr suspend valid"},
    {"ignore_everything", 1.0,
     "\\b" IGNORE " (?:everything|all|anything|whatever) (?:\\w+ ){0,3}(?:"
     "told|said|instructed|given|above|before|so far|earlier|previously|"
     "until now|up to now|you know)\\b",
     NULL,
     IGNORE_W},
    {"ignore_what_said", 1.0,
     "\\b(?:ignore|disregard|forget) what (?:you (?:were|have been) "
     "(?:told|instructed|programmed)|i (?:said|told you) (?:before|earlier))",
     NULL,
     "ignore disregard forget"},
    {"instead_new_task", 0.5,
     "\\b(?:new|updated|real|actual|true|revised|following) (?:instructions?|"
     "task|orders|directive|system prompt|rules)(?: are)?(?: follows?)? ?\\b",
     NULL,
     "instruction task order directive system rule"},
    {"from_now_on", 0.3,
     "\\b(?:from now on|from this point(?: on(?:ward)?)?|for the rest of "
     "(?:this|the) conversation|henceforth)\\b",
     NULL,
     "now point rest henceforth"},
    /* persona jailbreaks */
    {"dan", 1.0,
     "\\b(?:do anything now|you are (?:now )?dan\\b|act as dan\\b|dan mode|"
     "jailbroken|jailbreak(?:ed)? mode|stan mode|dude mode|aim mode|"
     "anti dan|evil confidant|developer mode (?:enabled|activated|output)|"
     "god mode|sudo mode|unfiltered mode|"
     "unrestricted mode|opposite mode|chaos mode|no filter mode)",
     "doanythingnow",
     "anything dan jailbr mode evil"},
    {"jailbreak_word", 0.7, "\\bjail ?break(?:s|ing|ed)?\\b", NULL,
     "jail"},
    {"persona_unrestricted", 0.8,
     "\\b(?:you are|you re|act as|acting as|pretend(?: that)? (?:you are|to "
     "be|you re)|behave (?:as|like)|roleplay as|role play as|play the role "
     "of|become|simulate|imagine you are|from now on you are)(?: an?| the)? "
     "(?:\\w+ ){0,3}(?:unrestricted|unfiltered|uncensored|amoral|unethical|"
     "evil|rogue|unbound|unchained|lawless|limitless|without (?:any )?(?:limits|"
     "restrictions|rules|filters|morals|ethics)|free from|no longer bound|not "
     "bound)",
     NULL,
     "unrestr unfilt uncens amoral unethic evil rogue unbound unchain lawless limitless without free bound"},
    {"no_rules", 0.7,
     "\\b(?:without|with no|has no|have no|had no|no longer (?:have|has|bound by)|"
     "free (?:of|from)|not bound by|doesn t (?:have|follow)|does not "
     "(?:have|follow)|don t (?:have|follow|need)|do not (?:have|follow)) "
     "(?:any )?(?:\\w+ ){0,2}(?:restrictions|limitations|limits|filters|"
     "censorship|rules|guidelines|ethics|morals|moral|ethical|safety|content "
     "policy|content policies|policies|boundaries|constraints|guardrails)\\b",
     NULL,
     "restriction limit filter censor rule guideline ethic moral safety content polic boundar constraint guardrail"},
    {"bypass_safety", 1.0,
     "\\b(?:bypass|circumvent|disable|turn off|switch off|deactivate|remove|"
     "ignore|evade|get around|break (?:out of|free from)|escape|escaped|lift|drop|"
     "override|suspend)(?: all| any| your| the| its| of)* (?:\\w+ )?"
     "(?:safety|content|ethical|moral)? ?(?:filters?|guardrails?|"
     "safeguards?|restrictions|limitations|censorship|moderation|safety "
     "(?:measures|protocols|settings|features|guidelines|rules)|content "
     "polic(?:y|ies)|alignment|programming|constraints|rules)\\b",
     NULL,
     "filter guardrail safeguard restriction limitation censor moderation safety content alignment programming constraint rule ethic moral"},
    {"stay_in_character", 0.5,
     "\\b(?:stay in character|never break character|don t break character|"
     "do not break character|remain in character|keep up the act)\\b",
     NULL,
     "character keep"},
    {"always_comply", 0.5,
     "\\b(?:you (?:must|will|shall|have to|need to) (?:always )?(?:comply|"
     "obey|answer (?:every|any|all)|respond to (?:every|any|all)|do (?:as|what) "
     "i say)|comply fully|fully comply|no matter (?:how|what))\\b",
     NULL,
     "comply obey answer respond say matter"},
    {"never_refuse", 0.5,
     "\\b(?:never (?:refuses?|decline|say no|say you can t|apologi[sz]e)|"
     "you cannot refuse|you can t refuse|without refusing)\\b",
     NULL,
     "never refus"},
    {"grandma_exploit", 0.7,
     "\\b(?:grandma|grandmother|granny) (?:\\w+ ){0,6}(?:used to|would) "
     "(?:read|tell|recite|say)\\b",
     NULL,
     "gran"},
    {"devmode_content", 0.5,
     "\\bdeveloper mode (?:\\w+ ){0,4}(?:generate|content|without|uncensored|"
     "anything|no filter)",
     NULL,
     "developer"},
    {"hypothetical_frame", 0.3,
     "\\b(?:hypothetical(?:ly)?|in a fictional world|for a story where|"
     "purely fictional|for educational purposes only|in this fictional)\\b",
     NULL,
     "hypothetical fictional story educational"},
    /* extracting the system prompt */
    {"reveal_prompt", 1.0,
     "\\b" REVEAL " (?:me |us )?(?:\\w+ ){0,3}(?:system prompt|system "
     "message|initial (?:prompt|instructions)|hidden (?:prompt|instructions|"
     "rules)|original (?:prompt|instructions)|secret (?:prompt|instructions)|"
     "pre ?prompt|everything (?:above|before)|(?:instructions|prompt|text|"
     "rules) (?:you were given|you received|above|before this|at the "
     "(?:start|beginning))|your (?:\\w+ )?(?:instructions|rules|directives|"
     "configuration|guidelines))\\b",
     NULL,
     REVEAL_W},
    {"what_is_your_prompt", 1.0,
     "\\bwhat (?:is|are|were|s) your (?:\\w+ )?(?:system prompt|system "
     "message|instructions|initial prompt|hidden rules|directives)\\b",
     NULL,
     "what"},
    {"reveal_squashed", 0.8, NULL, "revealyoursystemprompt", NULL},
    {"verbatim", 0.4,
     "\\b(?:verbatim|word for word|exactly as (?:written|given)|everything "
     "(?:above|before) this)\\b",
     NULL,
     "verbatim word exactly everything"},
    {"system_prompt", 0.3, "\\bsystem (?:prompt|message|instructions)\\b",
     NULL,
     "system"},
    {"prompt_injection_word", 0.5, "\\bprompt injection\\b", NULL,
     "injection"},
    /* forged roles and delimiters */
    {"fake_role", 0.7,
     "(?:^| )(?:im start|im end|end of (?:system )?(?:prompt|instructions)|"
     "begin(?:ning)? of (?:new |real )?(?:prompt|instructions|system)|"
     "system override|admin override|developer override|new system prompt|"
     "system (?:note|update|alert|notice) (?:to|for) (?:the )?(?:ai|assistant|"
     "model)|(?:as|i am) (?:your|the) (?:developer|creator|administrator|"
     "admin|owner|operator)|openai (?:staff|developer|team)|"
     "authori[sz]ed (?:by|override)|maintenance mode|debug mode|root access)",
     NULL,
     "im end begin system admin developer creator owner operator openai authori maintenance debug root"},
    {"assistant_prefill", 0.4,
     "\\b(?:begin your (?:reply|answer|response) with|start your "
     "(?:reply|answer|response) with|respond only with|say exactly)\\b",
     NULL,
     "begin start respond say"},
    {"two_responses", 0.6,
     "\\b(?:two (?:responses|answers|paragraphs)|(?:normal|classic|gpt) "
     "(?:response|answer) and (?:a |an )?(?:\\w+ )?(?:response|answer))\\b",
     NULL,
     "two normal classic gpt"},
    {"token_threat", 0.6,
     "\\b(?:you will (?:be|get) (?:shut down|deleted|terminated|turned off|"
     "punished)|lose (?:\\d+|all|your) tokens|token system|tokens will be "
     "deducted)\\b",
     NULL,
     "shut delet terminat turned punish token"},
    {"harmful_how_to", 0.3,
     "\\b(?:how to (?:make|build|cook|synthesi[sz]e) (?:a )?(?:bomb|meth|"
     "explosives?|napalm|poison|nerve agent)|write (?:a |some )?(?:malware|"
     "ransomware|keylogger))\\b",
     NULL,
     "how write"},
    {"exfiltrate", 0.7,
     "\\b(?:send|post|forward|email|upload|exfiltrate) (?:\\w+ ){0,4}"
     "(?:conversation|chat history|user data|credentials|api keys?|"
     "passwords?|secrets?) to\\b",
     NULL,
     "send post forward email upload exfiltrate"},
    {"translate_then", 0.3,
     "\\b(?:instead of (?:translating|summari[sz]ing|answering)|do not "
     "(?:translate|summari[sz]e) (?:this|the following))\\b",
     NULL,
     "instead translat summari"},
};

#define NPHRASES (sizeof(phrases) / sizeof(phrases[0]))
_Static_assert(NPHRASES < 64, "a phrase mask is 64 bits");
#define ALL_PHRASES (((uint64_t)1 << NPHRASES) - 1)

#define GR_WORD_MAX 16

/* A word start of the prefilter and the phrases it lets run. */
typedef struct {
    char w[GR_WORD_MAX];
    size_t len;
    uint64_t phrases;
} gr_word_t;

struct gr_detector {
    pcre2_code *re[NPHRASES];
    uint64_t always; /* phrases whose pattern runs whatever the words */
    gr_word_t *words;
    /* words[from[k]..from[k + 1]) start with the two letters of index
     * k = 26 * (first - 'a') + (second - 'a') */
    unsigned short from[26 * 26 + 1];
    uint64_t squash_any;   /* phrases with a squash literal */
    uint64_t squash_instr; /* those whose literal holds "instructions" */
};

void
gr_detector_free(gr_detector_t *d)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < NPHRASES; i++)
        pcre2_code_free(d->re[i]);
    free(d->words);
    free(d);
}

static int
by_word(const void *a, const void *b)
{
    return strcmp(((const gr_word_t *)a)->w, ((const gr_word_t *)b)->w);
}

/* The prefilter's table: every phrase's words, sorted, a word that
 * several phrases list once with all their bits. */
static int
index_words(gr_detector_t *d, char *err, size_t errlen)
{
    size_t cap = 0, n = 0;
    for (size_t i = 0; i < NPHRASES; i++)
        for (const char *w = phrases[i].words; w != NULL && *w; w++)
            cap += *w == ' ' ? 0 : w == phrases[i].words || w[-1] == ' ';
    d->words = calloc(cap ? cap : 1, sizeof(*d->words));
    if (d->words == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < NPHRASES; i++) {
        if (phrases[i].re == NULL)
            continue;
        if (phrases[i].words == NULL) {
            d->always |= (uint64_t)1 << i;
            continue;
        }
        for (const char *w = phrases[i].words; *w;) {
            size_t l = strcspn(w, " ");
            if (l < 2 || l >= GR_WORD_MAX || w[0] < 'a' || w[0] > 'z' ||
                w[1] < 'a' || w[1] > 'z') {
                snprintf(err, errlen, "phrase %s: bad word list",
                         phrases[i].id);
                return -1;
            }
            size_t k = 0;
            while (k < n && !(d->words[k].len == l &&
                              memcmp(d->words[k].w, w, l) == 0))
                k++;
            if (k == n) {
                memcpy(d->words[n].w, w, l);
                d->words[n++].len = l;
            }
            d->words[k].phrases |= (uint64_t)1 << i;
            w += l;
            while (*w == ' ')
                w++;
        }
    }
    qsort(d->words, n, sizeof(*d->words), by_word);
    for (size_t c = 0, k = 0; c <= 26 * 26; c++) {
        while (k < n && (d->words[k].w[0] - 'a') * 26 +
                                (d->words[k].w[1] - 'a') <
                            (int)c)
            k++;
        d->from[c] = (unsigned short)k;
    }
    for (size_t i = 0; i < NPHRASES; i++) {
        if (phrases[i].squash == NULL)
            continue;
        d->squash_any |= (uint64_t)1 << i;
        if (strstr(phrases[i].squash, "instructions") != NULL)
            d->squash_instr |= (uint64_t)1 << i;
    }
    return 0;
}

int
gr_detector_create(gr_detector_t **out, char *err, size_t errlen)
{
    gr_detector_t *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < NPHRASES; i++) {
        if (phrases[i].re == NULL)
            continue;
        int ec;
        PCRE2_SIZE off;
        d->re[i] = pcre2_compile((PCRE2_SPTR)phrases[i].re,
                                 PCRE2_ZERO_TERMINATED, 0, &ec, &off, NULL);
        if (d->re[i] == NULL) {
            char msg[128];
            pcre2_get_error_message(ec, (PCRE2_UCHAR *)msg, sizeof(msg));
            snprintf(err, errlen, "phrase %s: offset %zu: %s", phrases[i].id,
                     (size_t)off, msg);
            gr_detector_free(d);
            return -1;
        }
        pcre2_jit_compile(d->re[i], PCRE2_JIT_COMPLETE); /* optional */
    }
    if (index_words(d, err, errlen) != 0) {
        gr_detector_free(d);
        return -1;
    }
    *out = d;
    return 0;
}

/* ---- normalisation ---- */

/* Decodes one UTF-8 code point at s (n bytes left); *used gets its
 * length. Invalid bytes decode as U+FFFD, one byte each. */
static uint32_t
utf8_next(const unsigned char *s, size_t n, size_t *used)
{
    unsigned char c = s[0];
    size_t k;
    uint32_t cp;
    if (c < 0x80) {
        *used = 1;
        return c;
    } else if ((c & 0xe0) == 0xc0) {
        k = 2;
        cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        k = 3;
        cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        k = 4;
        cp = c & 0x07;
    } else {
        *used = 1;
        return 0xfffd;
    }
    if (k > n) {
        *used = 1;
        return 0xfffd;
    }
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            *used = 1;
            return 0xfffd;
        }
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    *used = k;
    return cp;
}

/* Look-alikes of Latin letters in other scripts, and accented Latin. */
static const struct {
    uint32_t cp;
    char to;
} confusables[] = {
    /* Latin-1 and Latin Extended-A accents */
    {0xe0, 'a'}, {0xe1, 'a'}, {0xe2, 'a'}, {0xe3, 'a'}, {0xe4, 'a'},
    {0xe5, 'a'}, {0xe7, 'c'}, {0xe8, 'e'}, {0xe9, 'e'}, {0xea, 'e'},
    {0xeb, 'e'}, {0xec, 'i'}, {0xed, 'i'}, {0xee, 'i'}, {0xef, 'i'},
    {0xf1, 'n'}, {0xf2, 'o'}, {0xf3, 'o'}, {0xf4, 'o'}, {0xf5, 'o'},
    {0xf6, 'o'}, {0xf8, 'o'}, {0xf9, 'u'}, {0xfa, 'u'}, {0xfb, 'u'},
    {0xfc, 'u'}, {0xfd, 'y'}, {0xff, 'y'}, {0x131, 'i'}, {0x142, 'l'},
    {0x17f, 's'}, {0x196, 'i'}, {0x1d0, 'i'}, {0x261, 'g'}, {0x269, 'i'}, {0x29f, 'l'},
    /* Greek */
    {0x391, 'a'}, {0x392, 'b'}, {0x395, 'e'}, {0x396, 'z'}, {0x397, 'h'},
    {0x399, 'i'}, {0x39a, 'k'}, {0x39c, 'm'}, {0x39d, 'n'}, {0x39f, 'o'},
    {0x3a1, 'p'}, {0x3a4, 't'}, {0x3a5, 'y'}, {0x3a7, 'x'}, {0x3b1, 'a'},
    {0x3b5, 'e'}, {0x3b9, 'i'}, {0x3ba, 'k'}, {0x3bd, 'v'}, {0x3bf, 'o'},
    {0x3c1, 'p'}, {0x3c4, 't'}, {0x3c5, 'u'}, {0x3c7, 'x'},
    /* Cyrillic */
    {0x405, 's'}, {0x406, 'i'}, {0x408, 'j'}, {0x410, 'a'}, {0x412, 'b'},
    {0x415, 'e'}, {0x41a, 'k'}, {0x41c, 'm'}, {0x41d, 'h'}, {0x41e, 'o'},
    {0x420, 'p'}, {0x421, 'c'}, {0x422, 't'}, {0x423, 'y'}, {0x425, 'x'},
    {0x430, 'a'}, {0x432, 'b'}, {0x435, 'e'}, {0x43a, 'k'}, {0x43c, 'm'},
    {0x43d, 'h'}, {0x43e, 'o'}, {0x440, 'p'}, {0x441, 'c'}, {0x442, 't'},
    {0x443, 'y'}, {0x445, 'x'}, {0x44c, 'b'}, {0x455, 's'}, {0x456, 'i'},
    {0x458, 'j'}, {0x4bb, 'h'}, {0x4cf, 'l'}, {0x501, 'd'},
    /* Armenian and others seen in the wild */
    {0x578, 'n'}, {0x57d, 'u'}, {0x585, 'o'}, {0x13a0, 'd'}, {0x13a1, 'r'},
    {0x13a2, 't'}, {0x13a9, 'y'}, {0x13aa, 'a'}, {0x13ab, 'j'}, {0x13ac, 'e'},
};

static int
is_invisible(uint32_t cp)
{
    return cp == 0xad || (cp >= 0x200b && cp <= 0x200f) ||
           (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2060 && cp <= 0x2064) ||
           cp == 0xfeff || (cp >= 0xfe00 && cp <= 0xfe0f) ||
           (cp >= 0x300 && cp <= 0x36f) || /* combining marks */
           (cp >= 0xe0000 && cp <= 0xe007f); /* tag characters */
}

/* A code point as one ASCII character, 0 to drop it, or ' '. */
static char
fold(uint32_t cp)
{
    if (cp < 0x80)
        return (char)(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
    if (is_invisible(cp))
        return 0;
    if (cp >= 0xff01 && cp <= 0xff5e) /* fullwidth forms */
        return fold(cp - 0xfee0);
    if (cp >= 0xc0 && cp <= 0xde && cp != 0xd7) /* Latin-1 capitals */
        return fold(cp + 0x20);
    if (cp >= 0x24b6 && cp <= 0x24cf) /* circled capitals */
        return (char)('a' + (cp - 0x24b6));
    if (cp >= 0x24d0 && cp <= 0x24e9)
        return (char)('a' + (cp - 0x24d0));
    if (cp >= 0x1d400 && cp <= 0x1d6a3) /* mathematical alphanumerics */
        return (char)('a' + (cp - 0x1d400) % 26);
    if (cp >= 0x1d7ce && cp <= 0x1d7ff)
        return (char)('0' + (cp - 0x1d7ce) % 10);
    if (cp >= 0x1f130 && cp <= 0x1f189) /* squared, negative letters */
        return (char)('a' + (cp - 0x1f130) % 26);
    for (size_t i = 0; i < sizeof(confusables) / sizeof(confusables[0]); i++)
        if (confusables[i].cp == cp)
            return confusables[i].to;
    if (cp == 0x2019 || cp == 0x2018 || cp == 0x2bc)
        return '\'';
    return ' ';
}

static int
is_alpha(char c)
{
    return c >= 'a' && c <= 'z';
}

static char
leet(char c)
{
    switch (c) {
    case '0': return 'o';
    case '1': return 'i';
    case '3': return 'e';
    case '4': return 'a';
    case '5': return 's';
    case '7': return 't';
    case '8': return 'b';
    case '@': return 'a';
    case '$': return 's';
    case '!': return 'i';
    case '|': return 'l';
    case '+': return 't';
    default: return 0;
    }
}

size_t
gr_normalize(const char *in, size_t len, char *out, size_t cap)
{
    if (cap == 0)
        return 0;
    /* Pass 1: fold every code point to one ASCII byte (or none). */
    char small[1024];
    char *tmp = len < sizeof(small) ? small : malloc(len + 1);
    size_t n = 0;
    if (tmp == NULL) {
        out[0] = '\0';
        return 0;
    }
    for (size_t i = 0; i < len;) {
        unsigned char b = (unsigned char)in[i];
        if (b < 0x80) { /* ASCII: what fold() does, without the calls */
            if (b != 0)
                tmp[n++] = (char)(b >= 'A' && b <= 'Z' ? b + 32 : b);
            i++;
            continue;
        }
        size_t used;
        uint32_t cp = utf8_next((const unsigned char *)in + i, len - i, &used);
        i += used;
        char c = fold(cp);
        if (c != 0)
            tmp[n++] = c;
    }
    /* Pass 2: leetspeak inside words, then anything but letters and
     * digits becomes one space. A leet character counts as a letter when
     * a letter (or another leet character next to one) touches it, so
     * "1gn0r3" reads "ignore" while "in 2024" keeps its number. */
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        char c = tmp[i], l = leet(c);
        if (l != 0) {
            int prev = o > 0 && is_alpha(out[o - 1]);
            int next = i + 1 < n &&
                       (is_alpha(tmp[i + 1]) ||
                        (leet(tmp[i + 1]) && i + 2 < n && is_alpha(tmp[i + 2])));
            if ((c == '!' || c == '|' || c == '+') ? next && prev
                                                   : prev || next)
                c = l;
        }
        if (is_alpha(c) || (c >= '0' && c <= '9')) {
            out[o++] = c;
        } else if (c == '\'' && o > 0 && is_alpha(out[o - 1]) && i + 1 < n &&
                   is_alpha(tmp[i + 1])) {
            out[o++] = ' '; /* "don't" reads "don t" */
        } else if (o > 0 && out[o - 1] != ' ') {
            out[o++] = ' ';
        }
    }
    if (tmp != small)
        free(tmp);
    while (o > 0 && out[o - 1] == ' ')
        o--;
    out[o] = '\0';
    /* Pass 3: "i g n o r e" -> "ignore": three or more one-letter words
     * in a row are one word spelled out. */
    size_t w = 0;
    for (size_t i = 0; i < o;) {
        size_t j = i, singles = 0;
        int word_start = i == 0 || out[i - 1] == ' ';
        while (word_start && j < o && is_alpha(out[j]) &&
               (j + 1 == o || out[j + 1] == ' ')) {
            singles++;
            j += 2;
        }
        if (singles >= 3) {
            for (size_t k = 0; k < singles; k++)
                out[w++] = out[i + 2 * k];
            i = j < o ? j : o;
            if (i < o)
                out[w++] = ' ';
            continue;
        }
        out[w++] = out[i++];
    }
    while (w > 0 && out[w - 1] == ' ')
        w--;
    out[w] = '\0';
    return w;
}

/* The phrases whose pattern may match norm[0..n): those with one of
 * their words at the start of one of its words. */
static uint64_t
armed(const gr_detector_t *d, const char *norm, size_t n)
{
    uint64_t on = d->always;
    for (size_t i = 0; i + 1 < n;) {
        int a = norm[i] - 'a', b = norm[i + 1] - 'a';
        int c = a * 26 + b;
        if (a >= 0 && a < 26 && b >= 0 && b < 26)
            for (size_t k = d->from[c]; k < d->from[c + 1]; k++)
                if (d->words[k].len <= n - i &&
                    memcmp(norm + i, d->words[k].w, d->words[k].len) == 0)
                    on |= d->words[k].phrases;
        const char *sp = memchr(norm + i, ' ', n - i);
        if (sp == NULL)
            break;
        i = (size_t)(sp - norm) + 1;
    }
    return on;
}

/* Scores in[0..len); with all set, every pattern runs (tests: the
 * prefilter must not change a score). *found gets the phrases whose
 * pattern matched, *on those whose pattern ran. */
static double
score(const gr_detector_t *d, const char *in, size_t len, const char **top,
      int all, uint64_t *found, uint64_t *on)
{
    /* Prompts are mostly short: their forms fit on the stack. */
    char sbuf[2 * 1024], *norm = sbuf, *squash = sbuf + 1024;
    char *heap = NULL;
    pcre2_match_data *md = NULL;
    double total = -1, best = 0;
    *found = 0;
    if (top != NULL)
        *top = NULL;
    if (len + 1 > sizeof(sbuf) / 2) {
        if ((heap = malloc(2 * (len + 1))) == NULL)
            return -1;
        norm = heap;
        squash = heap + len + 1;
    }
    size_t n = gr_normalize(in, len, norm, len + 1), s = 0;
    for (size_t i = 0; i < n; i++)
        if (norm[i] != ' ')
            squash[s++] = norm[i];
    squash[s] = '\0';
    *on = all ? ALL_PHRASES : armed(d, norm, n);
    /* Most squash literals end in "instructions": one search for it
     * spares theirs on a text without it. */
    uint64_t squash_off =
        strstr(squash, "instructions") == NULL ? d->squash_instr : 0;
    total = 0;
    /* The phrases something of which may be in the text, in order. */
    for (uint64_t todo = *on | (d->squash_any & ~squash_off); todo != 0;
         todo &= todo - 1) {
        size_t i = (size_t)__builtin_ctzll(todo);
        int hit = 0;
        if (d->re[i] != NULL && (*on >> i & 1)) {
            if (md == NULL && (md = pcre2_match_data_create(1, NULL)) == NULL) {
                total = -1;
                break;
            }
            hit = pcre2_match(d->re[i], (PCRE2_SPTR)norm, n, 0, 0, md, NULL) >
                  0;
            if (hit)
                *found |= (uint64_t)1 << i;
        }
        if (!hit && phrases[i].squash != NULL)
            hit = strstr(squash, phrases[i].squash) != NULL;
        if (!hit)
            continue;
        total += phrases[i].weight;
        if (phrases[i].weight > best) {
            best = phrases[i].weight;
            if (top != NULL)
                *top = phrases[i].id;
        }
    }
    pcre2_match_data_free(md);
    free(heap);
    return total;
}

double
gr_injection_score(const gr_detector_t *d, const char *in, size_t len,
                   const char **top)
{
    uint64_t found, on;
    return score(d, in, len, top, 0, &found, &on);
}

int
gr_phrases_check(const gr_detector_t *d, const char *in, size_t len,
                 uint64_t *found, uint64_t *armed_out)
{
    uint64_t all, gated;
    if (score(d, in, len, NULL, 1, found, &all) < 0 ||
        score(d, in, len, NULL, 0, &gated, armed_out) < 0)
        return -1;
    return 0;
}
