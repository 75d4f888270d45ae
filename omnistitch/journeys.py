"""Generated omnichannel journeys with ground truth, for measuring identity quality.

``generate(customers, events, seed)`` builds a deterministic (``random.Random(seed)``, no
set iteration, no hashing of ``str``) population of people and their events over 60 days,
each event labelled with the person who really caused it. Identifiers are written the way
connectors send them: not normalised (mixed-case emails, phone numbers in several formats).

Realism: tracking dominates (web page/track events with an ``anonymous_id``, app events
with a ``device_id``); logins carry a ``user_id``; chats carry the email typed into the
pre-chat form; calls and SMS carry the caller's number; inbound emails carry the sender.
People have 1-3 browsers/devices, 1-2 emails and usually a phone; activity is skewed
(a few heavy customers, a long tail of one-event visitors).

Traps are person-level and labelled (``Dataset.trap_people``; an event carrying the trap's
identifier has ``trap`` set). Each trapped person is in exactly one trap.

Deterministic traps (two different people must never end up merged):

* ``shared_family_phone``: a household of 2-4 people, each with their own login and email,
  shares one landline; their calls are authenticated in the IVR (phone + user_id).
* ``call_center_number``: the company's own number is recorded as the caller id of support
  calls of many people; each call also carries the caller's email (typed by the agent) and,
  for half of the people, the contact-centre CRM's contact id (``crm_id``, verified).
* ``test_email``: placeholder emails (``test@test.com``, ``null``, ``N/A``, ...) typed into
  forms and chats, and on server events that carry nothing else.
* ``shared_device``: a family tablet (one ``device_id``) used by two people who each log in
  with their own ``user_id``; the app requires a login, so every event on it carries one.

Other traps:

* ``typo_email``: a person also uses a misspelt variant of their email (``gmial.com``) that
  nobody else has; it links to them only through their own identifiers.
* ``phone_format_variants``: the same person's number written in several formats (a
  recall trap: these must stitch).

By design a shared identifier is never the *only* identifier of an event: an event that
carries nothing but a household's landline cannot say which member sent it, so its truth
is unknowable to any resolver and it would measure luck, not rules. For the same reason
household members identify themselves with their own login where they share a phone or a
device: a landline seen with two emails and no login is indistinguishable from one person
with two addresses. The call-centre number needs no such help: it is told apart by the
number of different people it shows up on, which is what hub quarantine is for.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final

from schemas.events import Channel, Identifier

#: The first instant of every generated dataset; events spread over ``WINDOW``.
EPOCH: Final = datetime(2026, 3, 1, tzinfo=UTC)
WINDOW: Final = timedelta(days=60)
#: The smallest population for which every trap can be present.
MIN_CUSTOMERS: Final = 40
#: The company's own (fictional, toll-free) number: the call-centre trap.
COMPANY_NUMBER: Final = "8005550199"


class Trap(StrEnum):
    """A labelled hazard in the generated data."""

    SHARED_FAMILY_PHONE = "shared_family_phone"
    CALL_CENTER_NUMBER = "call_center_number"
    TEST_EMAIL = "test_email"
    SHARED_DEVICE = "shared_device"
    TYPO_EMAIL = "typo_email"
    PHONE_FORMAT_VARIANTS = "phone_format_variants"


#: Traps on which no two different people may ever be merged.
DETERMINISTIC_TRAPS: Final = (
    Trap.SHARED_FAMILY_PHONE,
    Trap.CALL_CENTER_NUMBER,
    Trap.TEST_EMAIL,
    Trap.SHARED_DEVICE,
)

#: Share of the population in each trap (at least one group each).
_TRAP_SHARE: Final = {
    Trap.SHARED_FAMILY_PHONE: 0.03,
    Trap.CALL_CENTER_NUMBER: 0.015,
    Trap.TEST_EMAIL: 0.02,
    Trap.SHARED_DEVICE: 0.02,
    Trap.TYPO_EMAIL: 0.02,
    Trap.PHONE_FORMAT_VARIANTS: 0.05,
}
#: Fewest people in each trap, so that even a small dataset exercises every trap.
_TRAP_MIN_PEOPLE: Final = {
    Trap.SHARED_FAMILY_PHONE: 2,
    Trap.CALL_CENTER_NUMBER: 5,
    Trap.TEST_EMAIL: 3,
    Trap.SHARED_DEVICE: 2,
    Trap.TYPO_EMAIL: 1,
    Trap.PHONE_FORMAT_VARIANTS: 1,
}
#: Fewest events a trapped person gets, so that the trap is exercised.
_TRAP_MIN_EVENTS: Final = 5

_FIRST: Final = (  # noqa: SIM905 (a word list)
    "dana sam alex jordan taylor morgan casey riley jamie avery maria jose wei li priya "
    "arjun fatima omar chloe lucas emma noah olivia liam ava mia ethan sofia mateo yuki "
    "hana kofi amara ines tomas lena jonas elena marco nora felix"
).split()
_LAST: Final = (  # noqa: SIM905 (a word list)
    "reyes smith johnson nguyen garcia patel kim chen mueller rossi dubois silva okafor "
    "haddad novak ivanova tanaka sato cohen murphy obrien walsh larsen berg costa lopez "
    "martin brown wilson clark lewis young hall allen wright scott green baker adams"
).split()
_PERSONAL_DOMAINS: Final = (
    ("gmail.com", 45),
    ("yahoo.com", 12),
    ("hotmail.com", 10),
    ("outlook.com", 10),
    ("icloud.com", 8),
    ("aol.com", 3),
    ("proton.me", 2),
)
_WORK_DOMAINS: Final = ("acme-corp.com", "globex.io", "initech.com", "umbrella.co", "hooli.xyz")
_DOMAIN_TYPOS: Final = {
    "gmail.com": ("gmial.com", "gmai.com", "gamil.com", "gmail.con", "gnail.com"),
    "yahoo.com": ("yaho.com", "yahooo.com", "yahoo.con"),
    "hotmail.com": ("hotmial.com", "hotmal.com", "hotmail.co"),
    "outlook.com": ("outlok.com", "outloo.com"),
    "icloud.com": ("iclod.com", "icloud.con"),
}
#: Placeholders people and systems type when they have no email (all must be unusable).
_PLACEHOLDER_EMAILS: Final = (
    "test@test.com",
    "Test@Test.com",
    "TEST@TEST.COM",
    "test@example.com",
    "noreply@example.com",
    "null",
    "NULL",
    "N/A",
    "n/a",
    "none",
    "unknown",
)
#: US area codes (no toll-free, no N11); numbers are the fictional 555-01XX range.
_AREA_CODES: Final = tuple(a for a in range(201, 990) if a % 100 != 11 and a // 100 != 8)
#: Draws of a fictional 555-01XX number before the generator widens to the 555 exchange.
_FICTIONAL_TRIES: Final = 50


@dataclass(frozen=True, slots=True)
class LabelledEvent:
    """One generated event: what a connector would publish, plus the truth about it."""

    event_id: str
    occurred_at: datetime
    channel: Channel
    kind: str
    identifiers: list[Identifier]
    true_person: str
    trap: str | None = None


@dataclass(frozen=True)
class Dataset:
    """Labelled events (sorted by time) and who is in which trap."""

    seed: int
    people: tuple[str, ...]
    events: list[LabelledEvent]
    trap_people: dict[str, tuple[str, ...]]

    def trap_of(self) -> dict[str, str]:
        """Person id -> the trap they are in (trapped people only)."""
        return {p: trap for trap, people in self.trap_people.items() for p in people}

    def fingerprint(self) -> str:
        """A digest of the whole dataset, equal across processes for the same seed."""
        h = hashlib.sha256()
        for e in self.events:
            ids = ";".join(f"{i.type}={i.value}" for i in e.identifiers)
            line = f"{e.event_id}|{e.occurred_at.isoformat()}|{e.channel}|{e.kind}|{ids}|"
            h.update(f"{line}{e.true_person}|{e.trap}\n".encode())
        for trap, people in self.trap_people.items():
            h.update(f"{trap}:{','.join(people)}\n".encode())
        return h.hexdigest()


@dataclass
class _Person:
    pid: str
    last_name: str
    first_name: str
    user_id: str | None = None
    crm_id: str | None = None
    emails: list[str] = field(default_factory=list)
    phone: str | None = None  # ten national digits
    cookies: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    trap: Trap | None = None
    shared_phone: bool = False  # the phone is a household landline
    shared_device: str | None = None
    typo_email: str | None = None
    logged_in: dict[str, bool] = field(default_factory=dict)  # surface -> has a login
    phone_formats: list[int] = field(default_factory=list)  # rotation for format variants


@dataclass(frozen=True, slots=True)
class _Draft:
    at: datetime
    channel: Channel
    kind: str
    ids: list[Identifier]
    trap: Trap | None


class _Generator:
    """Builds one dataset; all randomness comes from one seeded ``random.Random``."""

    def __init__(self, customers: int, events: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.customers = customers
        self.events = events
        self.seed = seed
        self.emails: set[str] = set()  # membership only, never iterated
        self.phones: set[str] = {COMPANY_NUMBER}

    # -- the population -------------------------------------------------------------------
    def _token(self, length: int) -> str:
        return "".join(self.rng.choice("0123456789abcdefghjkmnpqrstvwxyz") for _ in range(length))

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _email(self, first: str, last: str, work: bool) -> str:
        rng = self.rng
        if work:
            domain = rng.choice(_WORK_DOMAINS)
        else:
            names, weights = zip(*_PERSONAL_DOMAINS, strict=True)
            domain = rng.choices(names, weights)[0]
        local = rng.choice(
            (f"{first}.{last}", f"{first}{last}", f"{first[0]}.{last}", f"{first}_{last}")
        )
        if rng.random() < 0.3:
            local += str(rng.randint(1, 99))
        address = f"{local}@{domain}"
        while address in self.emails:
            address = f"{local}{rng.randint(100, 9999)}@{domain}"
        self.emails.add(address)
        return address

    def _phone(self) -> str:
        # The fictional 555-0100..0199 numbers first (about 68,000 of them); a population
        # that has used most of them draws from the whole 555 exchange, which never runs out
        # before the generator's other limits.
        for _ in range(_FICTIONAL_TRIES):
            number = f"{self.rng.choice(_AREA_CODES)}5550{self.rng.randint(100, 199)}"
            if number not in self.phones:
                self.phones.add(number)
                return number
        while True:
            number = f"{self.rng.choice(_AREA_CODES)}555{self.rng.randint(0, 9999):04d}"
            if number not in self.phones:
                self.phones.add(number)
                return number

    def _typo(self, email: str) -> str:
        local, _, domain = email.partition("@")
        rng = self.rng
        for _ in range(20):
            if domain in _DOMAIN_TYPOS and rng.random() < 0.7:
                candidate = f"{local}@{rng.choice(_DOMAIN_TYPOS[domain])}"
            else:  # swap two adjacent letters of the local part
                i = rng.randrange(max(1, len(local) - 1))
                swapped = local[:i] + local[i + 1 : i + 2] + local[i : i + 1] + local[i + 2 :]
                candidate = f"{swapped}@{domain}"
            if candidate != email and candidate not in self.emails:
                self.emails.add(candidate)
                return candidate
        raise RuntimeError(f"no unused typo of {email!r}")  # pragma: no cover

    def _person(self, index: int, last: str | None = None, account: bool | None = None) -> _Person:
        rng = self.rng
        first = rng.choice(_FIRST)
        last = last or rng.choice(_LAST)
        p = _Person(pid=f"p{index:06d}", last_name=last, first_name=first)
        if account if account is not None else rng.random() < 0.55:
            p.user_id = f"usr_{self._token(12)}"
        p.emails.append(self._email(first, last, work=False))
        if rng.random() < 0.2:
            p.emails.append(self._email(first, last, work=True))
        if rng.random() < 0.85:
            p.phone = self._phone()
        surfaces = rng.choices((1, 2, 3), (45, 35, 20))[0]
        for s in range(surfaces):
            if (s == 0 and rng.random() < 0.7) or (s > 0 and rng.random() < 0.5):
                p.cookies.append(self._uuid())
            else:
                p.devices.append(self._uuid().upper())
        return p

    def _population(self) -> tuple[list[_Person], dict[str, tuple[str, ...]]]:
        rng = self.rng
        people: list[_Person] = []
        trap_people: dict[str, list[str]] = {t.value: [] for t in Trap}
        budget = {
            t: max(_TRAP_MIN_PEOPLE[t], round(self.customers * share))
            for t, share in _TRAP_SHARE.items()
        }

        def add(p: _Person, trap: Trap) -> None:
            p.trap = trap
            people.append(p)
            trap_people[trap.value].append(p.pid)

        # Households sharing a landline: 2-4 members, one surname, one number.
        left = budget[Trap.SHARED_FAMILY_PHONE]
        while left > 0:
            size = min(max(2, left), rng.choice((2, 2, 3, 4)))
            last, landline = rng.choice(_LAST), self._phone()
            for _ in range(size):
                p = self._person(len(people), last, account=True)
                p.phone, p.shared_phone = landline, True
                add(p, Trap.SHARED_FAMILY_PHONE)
            left -= size
        # Households sharing a tablet: two members, each with their own login.
        for _ in range(budget[Trap.SHARED_DEVICE] // 2):
            last, tablet = rng.choice(_LAST), self._uuid().upper()
            for _ in range(2):
                p = self._person(len(people), last, account=True)
                p.shared_device = tablet
                add(p, Trap.SHARED_DEVICE)
        for _ in range(budget[Trap.CALL_CENTER_NUMBER]):
            p = self._person(len(people))
            if rng.random() < 0.5:  # the CRM matched the caller to a contact
                p.crm_id = f"0035e00000{self._token(8).upper()}"
            add(p, Trap.CALL_CENTER_NUMBER)
        for _ in range(budget[Trap.TEST_EMAIL]):
            p = self._person(len(people))
            p.cookies = p.cookies or [self._uuid()]
            add(p, Trap.TEST_EMAIL)
        for _ in range(budget[Trap.TYPO_EMAIL]):
            p = self._person(len(people))
            p.cookies = p.cookies or [self._uuid()]
            p.typo_email = self._typo(p.emails[0])
            add(p, Trap.TYPO_EMAIL)
        for _ in range(budget[Trap.PHONE_FORMAT_VARIANTS]):
            p = self._person(len(people))
            p.phone = p.phone or self._phone()
            p.cookies = p.cookies or [self._uuid()]
            p.phone_formats = rng.sample(range(len(_PHONE_FORMATS)), len(_PHONE_FORMATS))
            add(p, Trap.PHONE_FORMAT_VARIANTS)
        if len(people) > self.customers:
            raise ValueError(f"{self.customers} customers is too few for the traps")
        while len(people) < self.customers:
            people.append(self._person(len(people)))
        # Person ids say nothing about traps or activity: renumber in a shuffled order.
        order = list(range(len(people)))
        rng.shuffle(order)
        renamed = {people[old].pid: f"p{new:06d}" for new, old in enumerate(order)}
        for p in people:
            p.pid = renamed[p.pid]
        people.sort(key=lambda p: p.pid)
        traps = {t: tuple(sorted(renamed[pid] for pid in ps)) for t, ps in trap_people.items()}
        return people, traps

    # -- activity -------------------------------------------------------------------------
    def _allocate(self, people: list[_Person]) -> list[int]:
        """Events per person: a floor each, the rest Zipf-like over a random ranking."""
        floors = [_TRAP_MIN_EVENTS if p.trap else 1 for p in people]
        extra = self.events - sum(floors)
        if extra < 0:
            raise ValueError(f"{self.events} events is too few for {len(people)} customers")
        ranking = list(range(len(people)))
        self.rng.shuffle(ranking)
        weights = [0.0] * len(people)
        for rank, i in enumerate(ranking):
            weights[i] = 1.0 / (rank + 8) ** 1.05
        counts = floors[:]
        for i in self.rng.choices(range(len(people)), weights, k=extra):
            counts[i] += 1
        return counts

    # -- rendering identifiers as connectors send them ------------------------------------
    def _email_text(self, address: str) -> str:
        r = self.rng.random()
        if r < 0.7:
            return address
        if r < 0.85:
            local, _, domain = address.partition("@")
            return f"{'.'.join(w.capitalize() for w in local.split('.'))}@{domain.capitalize()}"
        return address.upper()

    def _phone_text(self, p: _Person) -> str:
        assert p.phone is not None
        if p.trap is Trap.PHONE_FORMAT_VARIANTS:
            fmt = p.phone_formats[0]
            p.phone_formats.append(p.phone_formats.pop(0))
            return _PHONE_FORMATS[fmt](p.phone)
        if p.shared_phone:  # a landline, typed by whoever filled the form
            return self.rng.choice(_PHONE_FORMATS)(p.phone)
        return _PHONE_FORMATS[-1](p.phone)  # telephony sends E.164

    def _company_number(self) -> str:
        return self.rng.choice(_PHONE_FORMATS)(COMPANY_NUMBER)

    # -- one person's journey -------------------------------------------------------------
    def _journey(self, p: _Person, n: int) -> list[_Draft]:
        rng = self.rng
        sessions = self._trap_sessions(p)
        used = sum(len(kinds) for _, kinds in sessions)
        while used < n:
            channel, kinds = self._session(p, n - used)
            sessions.append((channel, kinds))
            used += len(kinds)
        rng.shuffle(sessions)
        span = rng.uniform(2, 60) if n > 3 else rng.uniform(0.05, 20)
        start = rng.uniform(0, 60 - span)
        starts = sorted(rng.uniform(start, start + span) for _ in sessions)
        drafts: list[_Draft] = []
        for (channel, kinds), day in zip(sessions, starts, strict=True):
            at = EPOCH + timedelta(days=day)
            surface = self._surface(p, channel, kinds)
            for kind in kinds:
                ids, trap = self._identifiers(p, channel, kind, surface)
                drafts.append(_Draft(at, channel, kind, ids, trap))
                at += timedelta(milliseconds=rng.randint(3_000, 240_000))
        return drafts

    def _trap_sessions(self, p: _Person) -> list[tuple[Channel, list[str]]]:
        rng = self.rng
        if p.trap is Trap.SHARED_FAMILY_PHONE:
            return [(Channel.VOICE, ["ivr_call"]) for _ in range(rng.randint(1, 3))]
        if p.trap is Trap.CALL_CENTER_NUMBER:
            return [(Channel.VOICE, ["support_call"]) for _ in range(rng.randint(1, 2))]
        if p.trap is Trap.SHARED_DEVICE:
            return [(Channel.APP, ["tablet_login", "tablet_screen"]) for _ in range(2)]
        if p.trap is Trap.TEST_EMAIL:
            return [
                (Channel.WEB, ["page", "placeholder_form"]),
                (Channel.CHAT, ["placeholder_chat"]),
                (Channel.SERVER, ["placeholder_order"]),
            ][: rng.randint(2, 3)]
        if p.trap is Trap.TYPO_EMAIL:
            return [
                (Channel.WEB, ["page", "typo_form"]),
                (Channel.CHAT, ["typo_chat"]),
                (Channel.SERVER, ["typo_order"]),
            ]
        if p.trap is Trap.PHONE_FORMAT_VARIANTS:
            return [
                (Channel.WEB, ["page", "checkout"]),
                (Channel.VOICE, ["call"]),
                (Channel.SMS, ["sms"]),
            ]
        return []

    def _session(self, p: _Person, room: int) -> tuple[Channel, list[str]]:
        """One ordinary session of at most ``room`` events."""
        rng = self.rng
        options: list[tuple[Channel, int]] = [(Channel.EMAIL, 7), (Channel.CHAT, 5)]
        if p.cookies:
            options.append((Channel.WEB, 60))
        if p.devices:
            options.append((Channel.APP, 35))
        if p.phone and not p.shared_phone:
            options += [(Channel.VOICE, 5), (Channel.SMS, 4)]
        if p.phone and p.shared_phone:
            options.append((Channel.VOICE, 5))
        channels, weights = zip(*options, strict=True)
        channel = rng.choices(channels, weights)[0]
        if channel in (Channel.WEB, Channel.APP):
            length = min(room, 1 + int(rng.expovariate(1 / 3)))
            kinds = [rng.choice(("page", "page", "track")) for _ in range(length)]
            if channel is Channel.APP:
                kinds = [rng.choice(("screen", "screen", "track")) for _ in range(length)]
            r = rng.random()
            if r < (0.3 if p.user_id else 0.12):
                kinds[rng.randrange(length)] = "login" if p.user_id else "identify"
            elif r < 0.38:
                kinds[rng.randrange(length)] = "checkout"
            return channel, kinds
        if channel is Channel.VOICE:
            return channel, ["ivr_call" if p.shared_phone else "call"]
        if channel is Channel.SMS:
            return channel, ["sms"] * min(room, rng.randint(1, 3))
        if channel is Channel.CHAT:
            return channel, ["chat"]
        return channel, ["email"] * min(room, rng.randint(1, 2))

    def _surface(self, p: _Person, channel: Channel, kinds: list[str]) -> str:
        rng = self.rng
        if "tablet_login" in kinds:
            assert p.shared_device is not None
            return p.shared_device
        if channel is Channel.APP:
            return rng.choice(p.devices)
        if p.cookies:
            return p.cookies[0] if rng.random() < 0.6 else rng.choice(p.cookies)
        return rng.choice(p.devices) if p.devices else ""

    def _identifiers(
        self, p: _Person, channel: Channel, kind: str, surface: str
    ) -> tuple[list[Identifier], Trap | None]:
        """What the connector reads off one event, and the trap it carries (if any)."""
        rng = self.rng
        surface_type = "device_id" if channel is Channel.APP else "anonymous_id"
        ids: list[tuple[str, str]] = []
        trap: Trap | None = None
        email = self._email_text(rng.choice(p.emails))
        if kind in ("page", "track", "screen", "login", "identify", "checkout"):
            if not surface:
                surface_type, surface = "anonymous_id", self._uuid()  # a one-off browser
            ids.append((surface_type, surface))
            if kind == "login" or (kind == "checkout" and p.user_id):
                p.logged_in[surface] = True  # account holders check out logged in
            if p.user_id and p.logged_in.get(surface):
                ids.insert(0, ("user_id", p.user_id))
            if kind in ("login", "identify") and (kind == "identify" or rng.random() < 0.5):
                ids.append(("email", email))
            if kind == "checkout":
                ids.append(("email", email))
                if (p.phone and rng.random() < 0.6) or p.trap is Trap.PHONE_FORMAT_VARIANTS:
                    ids.append(("phone", self._phone_text(p)))
        elif kind in ("tablet_login", "tablet_screen"):
            assert p.user_id is not None
            ids += [("user_id", p.user_id), ("device_id", surface)]
            trap = Trap.SHARED_DEVICE
        elif kind == "chat":
            ids.append(("email", email))
            if p.cookies:
                ids.insert(0, ("anonymous_id", surface))
        elif kind in ("call", "sms"):
            ids.append(("phone", self._phone_text(p)))
        elif kind == "ivr_call":
            assert p.user_id is not None
            ids += [("phone", self._phone_text(p)), ("user_id", p.user_id)]
        elif kind == "support_call":
            ids.append(("phone", self._company_number()))
            if p.crm_id:
                ids.append(("crm_id", p.crm_id))
            ids.append(("email", email))
            trap = Trap.CALL_CENTER_NUMBER
        elif kind == "email":
            ids.append(("email", email))
        elif kind.startswith("placeholder_"):
            ids.append(("email", rng.choice(_PLACEHOLDER_EMAILS)))
            if kind != "placeholder_order" and p.cookies:
                ids.insert(0, ("anonymous_id", rng.choice(p.cookies)))
            trap = Trap.TEST_EMAIL
        elif kind.startswith("typo_"):
            assert p.typo_email is not None
            ids.append(("email", self._email_text(p.typo_email)))
            if kind != "typo_order":
                ids.insert(0, ("anonymous_id", p.cookies[0]))
            trap = Trap.TYPO_EMAIL
        else:  # pragma: no cover
            raise AssertionError(kind)
        if any(t == "phone" for t, _ in ids):
            if p.shared_phone:
                trap = Trap.SHARED_FAMILY_PHONE
            elif p.trap is Trap.PHONE_FORMAT_VARIANTS:
                trap = Trap.PHONE_FORMAT_VARIANTS
        return [Identifier(type=t, value=v) for t, v in ids], trap

    # -- everything -----------------------------------------------------------------------
    def build(self) -> Dataset:
        people, trap_people = self._population()
        counts = self._allocate(people)
        drafts: list[tuple[datetime, str, int, _Draft]] = []
        for p, n in zip(people, counts, strict=True):
            for seq, d in enumerate(self._journey(p, n)):
                drafts.append((d.at, p.pid, seq, d))
        drafts.sort(key=lambda x: (x[0], x[1], x[2]))
        events = [
            LabelledEvent(
                event_id=f"bench-{self.seed}-{i:07d}",
                occurred_at=d.at,
                channel=d.channel,
                kind=d.kind,
                identifiers=d.ids,
                true_person=pid,
                trap=d.trap.value if d.trap else None,
            )
            for i, (_, pid, _, d) in enumerate(drafts)
        ]
        return Dataset(self.seed, tuple(p.pid for p in people), events, trap_people)


def _fmt_parens(n: str) -> str:
    return f"({n[:3]}) {n[3:6]}-{n[6:]}"


def _fmt_dots(n: str) -> str:
    return f"{n[:3]}.{n[3:6]}.{n[6:]}"


def _fmt_spaced_intl(n: str) -> str:
    return f"+1 {n[:3]} {n[3:6]} {n[6:]}"


def _fmt_dashes(n: str) -> str:
    return f"{n[:3]}-{n[3:6]}-{n[6:]}"


def _fmt_trunk(n: str) -> str:
    return f"1-{n[:3]}-{n[3:6]}-{n[6:]}"


def _fmt_bare(n: str) -> str:
    return n


def _fmt_e164(n: str) -> str:
    return f"+1{n}"


#: How people and systems write a US number; the last one is E.164 (what telephony sends).
_PHONE_FORMATS: Final = (
    _fmt_parens,
    _fmt_dots,
    _fmt_spaced_intl,
    _fmt_dashes,
    _fmt_trunk,
    _fmt_bare,
    _fmt_e164,
)


def generate(customers: int, events: int, seed: int) -> Dataset:
    """A deterministic labelled dataset of ``customers`` people and exactly ``events`` events.

    Raises ``ValueError`` when there are too few customers for the traps
    (``MIN_CUSTOMERS``) or too few events to give every person at least one.
    """
    if customers < MIN_CUSTOMERS:
        raise ValueError(f"need at least {MIN_CUSTOMERS} customers, got {customers}")
    dataset = _Generator(customers, events, seed).build()
    assert len(dataset.events) == events, (len(dataset.events), events)
    return dataset
