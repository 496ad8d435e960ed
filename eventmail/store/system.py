"""The system view: domains, accounts, addresses and credentials, a pure projection of the system stream."""

from dataclasses import dataclass, field

from ..proto import events_pb2 as pb


@dataclass
class AccountInfo:
    name: str
    addresses: list[str] = field(default_factory=list)
    password: pb.PasswordSet | None = None


@dataclass
class DeletedAccount:
    """An account in its grace period: gone for mail and logins, its data kept until `shred_after_us`."""

    info: AccountInfo  # as it was when deleted: its addresses are what bringing it back asks for
    shred_after_us: int


@dataclass
class SystemView:
    """Dynamic configuration, as of `seq`."""

    seq: int = 0
    accounts: dict[str, AccountInfo] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)  # normalised address -> account
    domains: set[str] = field(default_factory=set)
    dkim: dict[tuple[str, str], pb.DkimSelector] = field(default_factory=dict)
    deleted: dict[str, DeletedAccount] = field(default_factory=dict)

    def apply(self, seq: int, event: pb.Event) -> None:
        kind = event.WhichOneof("kind")
        if kind == "account_created":
            self.accounts.setdefault(event.account_created.name, AccountInfo(event.account_created.name))
        elif kind == "account_deleted":
            deletion = event.account_deleted
            info = self.accounts.pop(deletion.name, None)
            for addr in info.addresses if info else []:
                self.addresses.pop(addr, None)
            if info is not None and deletion.shred_after_us:
                self.deleted[deletion.name] = DeletedAccount(info, deletion.shred_after_us)
        elif kind == "account_undeleted":
            u = event.account_undeleted
            gone = self.deleted.pop(u.name, None)
            if gone is not None and u.name not in self.accounts:
                back = AccountInfo(u.name, password=gone.info.password)
                self.accounts[u.name] = back
                for addr in (normalize_address(a) for a in u.addresses):
                    if addr not in self.addresses:
                        back.addresses.append(addr)
                        self.addresses[addr] = u.name
        elif kind == "account_shredded":
            self.deleted.pop(event.account_shredded.name, None)
        elif kind == "password_set":
            acct = self.accounts.get(event.password_set.account)
            if acct is not None:
                acct.password = event.password_set
        elif kind == "address_added":
            a = event.address_added
            acct = self.accounts.get(a.account)
            addr = normalize_address(a.address)
            if acct is not None and addr not in self.addresses:
                acct.addresses.append(addr)
                self.addresses[addr] = a.account
        elif kind == "address_removed":
            addr = normalize_address(event.address_removed.address)
            owner = self.addresses.pop(addr, None)
            if owner is not None and owner in self.accounts:
                self.accounts[owner].addresses.remove(addr)
        elif kind == "domain_added":
            self.domains.add(event.domain_added.domain)
        elif kind == "domain_removed":
            self.domains.discard(event.domain_removed.domain)
        elif kind == "dkim_selector":
            d = event.dkim_selector
            self.dkim[(d.domain, d.selector)] = d
        self.seq = seq

    def account_for(self, address: str) -> str | None:
        """The account that receives mail for `address`: exact address first, then the catch-all."""
        addr = normalize_address(address)
        if addr in self.addresses:
            return self.addresses[addr]
        _, _, domain = addr.rpartition("@")
        return self.addresses.get("@" + domain)


def normalize_address(address: str) -> str:
    """The form addresses are looked up by: the domain as a lower-case A-label (RFC 5890), and
    the local part case-folded, as most mail systems compare it (RFC 5321 §2.4 allows either)."""
    local, at, domain = address.strip().rpartition("@")
    if not at:
        return address.strip().lower()
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        pass
    return f"{local.lower()}@{domain.lower()}"
