"""Notification texts in Korean (the venue's language, the default) and English (pure).

Each player has a locale (``ko`` or ``en``, ``PATCH /me``); a notification is rendered in it
when it is created and stored as sent. Unknown locales fall back to Korean; a missing
parameter renders as an empty string rather than failing a commit.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Literal

Locale = Literal["ko", "en"]
DEFAULT_LOCALE: Locale = "ko"

#: type -> locale -> (title, message template)
TEXTS: dict[str, dict[str, tuple[str, str]]] = {
    "reservation_created": {
        "ko": ("예약 요청 접수", "{name} {start} 예약 요청이 접수되었습니다."),
        "en": ("Reservation requested", "Your reservation of {name} at {start} was received."),
    },
    "reservation_approved": {
        "ko": ("예약 승인", "{name} {start} 예약이 승인되었습니다. 체크인 코드: {code}"),
        "en": (
            "Reservation approved",
            "Your reservation of {name} at {start} is approved. Check-in code: {code}",
        ),
    },
    "reservation_rejected": {
        "ko": ("예약 거절", "{name} {start} 예약이 거절되었습니다."),
        "en": ("Reservation rejected", "Your reservation of {name} at {start} was rejected."),
    },
    "reservation_cancelled": {
        "ko": ("예약 취소", "{name} {start} 예약이 취소되었습니다."),
        "en": ("Reservation cancelled", "Your reservation of {name} at {start} was cancelled."),
    },
    "no_show_released": {
        "ko": ("노쇼 처리", "{name} {start} 예약이 체크인 없이 지나 해제되었습니다."),
        "en": (
            "Reservation released",
            "Your reservation of {name} at {start} was released: nobody checked in.",
        ),
    },
    "reservation_checked_in": {
        "ko": ("체크인 완료", "{name} 이용을 시작합니다."),
        "en": ("Checked in", "Your session on {name} has started."),
    },
    "reservation_completed": {
        "ko": ("이용 종료", "{name} 이용 시간이 끝났습니다."),
        "en": ("Session over", "Your time on {name} is over."),
    },
    "reservation_reminder": {
        "ko": ("예약 알림", "{name} 예약이 {minutes}분 후 시작합니다. 체크인 코드: {code}"),
        "en": (
            "Reservation reminder",
            "Your reservation of {name} starts in {minutes} min. Check-in code: {code}",
        ),
    },
    "device_offline_during_reservation": {
        "ko": (
            "예약 기기 이상",
            "예약하신 {name}({start})이 응답하지 않습니다.{offer}",
        ),
        "en": (
            "Your machine is down",
            "{name}, reserved for you at {start}, is not responding.{offer}",
        ),
    },
    "offer": {
        "ko": (" 같은 종류의 {alt}를 대신 예약할 수 있습니다.", ""),
        "en": (" You can book {alt} of the same kind instead.", ""),
    },
    "digest": {
        "ko": ("새 알림 {count}건", "{titles}"),
        "en": ("{count} new notifications", "{titles}"),
    },
    "reservation_extended": {
        "ko": ("예약 연장", "{name} {start} 예약이 {end}까지 연장되었습니다."),
        "en": (
            "Reservation extended",
            "Your reservation of {name} at {start} now lasts until {end}.",
        ),
    },
    "reservation_moved": {
        "ko": ("예약 변경", "예약이 {name} {start}(~{end})로 옮겨졌습니다. 체크인 코드: {code}"),
        "en": (
            "Reservation moved",
            "Your reservation is now on {name} at {start} (until {end}). Check-in code: {code}",
        ),
    },
    "waitlist_offer": {
        "ko": (
            "대기 순서 도착",
            "{name}을(를) {until}까지 잡아 두었습니다. 지금 예약하세요 ({start}~{end}).",
        ),
        "en": (
            "Your turn",
            "{name} is held for you until {until}: take it now ({start} to {end}).",
        ),
    },
    "waitlist_offer_lapsed": {
        "ko": ("대기 제안 만료", "{name} 제안 시간이 지나 다음 분께 넘어갔습니다."),
        "en": ("Offer lapsed", "The hold on {name} ran out; it went to the next in line."),
    },
    "waitlist_removed": {
        "ko": ("대기 취소", "직원이 {kind} 대기열에서 회원님을 뺐습니다."),
        "en": ("Removed from the line", "Staff removed you from the {kind} waitlist."),
    },
    "booking_suspended": {
        "ko": (
            "예약 정지",
            "노쇼 {strikes}회로 {until}까지 직접 예약할 수 없습니다. 카운터에 문의하세요.",
        ),
        "en": (
            "Booking suspended",
            "After {strikes} no-shows you cannot book yourself until {until}. Ask at the counter.",
        ),
    },
    "suspension_lifted": {
        "ko": ("예약 정지 해제", "다시 직접 예약할 수 있습니다."),
        "en": ("Suspension lifted", "You can book again."),
    },
    "help_acknowledged": {
        "ko": ("직원이 가는 중", "{staff} 직원이 {name}(으)로 가고 있습니다."),
        "en": ("Staff on the way", "{staff} is on the way to {name}."),
    },
    "help_resolved": {
        "ko": ("도움 요청 완료", "{name}에서의 도움 요청이 처리되었습니다."),
        "en": ("Help call resolved", "Your call for help at {name} is resolved."),
    },
    # the venue floor (issue 18): ``then`` is one of the three session_then_* texts below
    "session_ending": {
        "ko": ("이용 시간 임박", "{name} 이용 시간이 {minutes}분 남았습니다. {then}"),
        "en": ("Session ending", "Your time on {name} ends in {minutes} min. {then}"),
    },
    "session_then_extend": {
        "ko": ("", "{until}까지 연장할 수 있습니다."),
        "en": ("", "You can extend it until {until}."),
    },
    "session_then_next": {
        "ko": ("", "다음 예약이 {next}에 시작하여 연장할 수 없습니다."),
        "en": ("", "The next booking starts at {next}: no extension."),
    },
    "session_then_none": {
        "ko": ("", "연장할 수 없습니다."),
        "en": ("", "It cannot be extended."),
    },
}


#: admin alert type -> (Korean, English): staff are Korean; the English is for the rest
ALERTS: dict[str, tuple[str, str]] = {
    "device_fault": (
        "{name}({id}) 고장 보고: {fault}",
        "{name} ({id}) reports a fault: {fault}",
    ),
    "device_flapping": (
        "{name}({id})이 {minutes}분 동안 {count}번 다시 접속했습니다. "
        "네트워크와 전원을 확인하세요.",
        "{name} ({id}) reconnected {count} times in {minutes} min: check its network and power",
    ),
    "device_down_reserved": (
        "{name}({id}) {status} 상태, {start} 예약이 있습니다. {alternative_ko}",
        "{name} ({id}) is {status} with a reservation at {start}; {alternative_en}",
    ),
    "no_show": (
        "{name}({id}) {start} 예약: 체크인이 없어 해제했습니다.",
        "{name} ({id}) {start}: no check-in; released",
    ),
    "bridge_db_errors": (
        "브리지 이상: 최근 데이터베이스 오류 {count}건",
        "bridge degraded: {count} database errors in the last seconds",
    ),
    "outbox_dead_letter": (
        "발송할 수 없는 메시지 {count}건을 보류했습니다 (최근: {topic}, {reason}). "
        "outbox 테이블의 dead_reason을 확인하세요.",
        "{count} outgoing messages could not be sent and were set aside (latest: {topic}, "
        "{reason}); see dead_reason in the outbox table",
    ),
    "player_disabled": (
        "플레이어 {user}이(가) 메시지를 과도하게 보내 (연속 {streak}건 폐기) 브로커 계정 "
        "{accounts}개를 {minutes}분 동안 차단했습니다.",
        "player {user} flooded the bridge ({streak} messages dropped in a row): {accounts} "
        "broker accounts disabled for {minutes} min",
    ),
    "help_requested": (
        "{user}님이 {name}({id})에서 직원을 호출했습니다 [{topic_ko}]{message}",
        "{user} calls staff to {name} ({id}) [{topic_en}]{message}",
    ),
    "help_moved": (
        "{user}님의 호출이 {name}({id})(으)로 옮겨졌습니다 (이전: {previous})",
        "{user}'s call moved to {name} ({id}) (was {previous})",
    ),
    "help_acknowledged": (
        "{staff}: {user}님의 호출({name})에 가는 중",
        "{staff} is on the way to {user} at {name}",
    ),
    "help_resolved": (
        "{staff}: {user}님의 호출({name}) 처리 완료",
        "{staff} resolved {user}'s call at {name}",
    ),
    "walk_in_overrun": (
        "{name}({id}) 예약 {start} 시작: 워크인 이용자가 아직 사용 중입니다 ({why}). "
        "자리를 안내해 주세요.",
        "{name} ({id}): the {start} booking has started and a walk-in is still playing "
        "({why_en}); please seat the player",
    ),
    "bridge_backlog": (
        "브리지 이상: 명령 {count}건 대기 중 (한도 {limit})",
        "bridge degraded: {count} commands waiting (limit {limit})",
    ),
}


def alert_texts(kind: str, params: Mapping[str, object]) -> tuple[str, str]:
    """(Korean, English) message of an admin alert of type ``kind``."""
    ko, en = ALERTS[kind]
    formatter = string.Formatter()
    missing = {"ko": "내용 없음", "en": "unspecified"}
    texts = []
    for template, lang in ((ko, "ko"), (en, "en")):
        values = _Lenient({k: missing[lang] if v is None else v for k, v in params.items()})
        texts.append(formatter.vformat(template, (), values))
    return texts[0], texts[1]


class _Lenient(dict[str, object]):
    def __missing__(self, key: str) -> str:
        return ""


def locale_of(value: str | None) -> Locale:
    return "en" if value == "en" else DEFAULT_LOCALE


def render(kind: str, locale: str | None, params: Mapping[str, object]) -> tuple[str, str]:
    """(title, message) of notification ``kind`` in ``locale``."""
    texts = TEXTS.get(kind)
    if texts is None:
        raise KeyError(f"no texts for notification type {kind!r}")
    title, message = texts[locale_of(locale)]
    values = _Lenient(params)
    formatter = string.Formatter()
    return formatter.vformat(title, (), values), formatter.vformat(message, (), values)
