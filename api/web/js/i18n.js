// The message catalogue (Korean first, the venue's language; English second) and the
// formatters. The markup holds only keys: data-i18n (text), data-i18n-placeholder,
// data-i18n-aria-label and data-i18n-title; applyI18n() fills them for the current locale.

const CATALOGUE = {
  ko: {
    "app.title": "게임플라자",
    "app.tagline": "실시간 기기 현황",
    "app.skip": "본문으로 건너뛰기",
    "lang.label": "언어",
    "lang.ko": "한국어",
    "lang.en": "English",
    "nav.board": "현황판",
    "nav.admin": "관리자",
    "nav.notifications": "알림",
    "nav.logout": "로그아웃",
    "nav.user": "{user}님",
    "nav.role.admin": "관리자",
    "login.title": "로그인",
    "login.username": "아이디",
    "login.password": "비밀번호",
    "login.submit": "로그인",
    "login.busy": "로그인 중…",
    "login.failed": "아이디 또는 비밀번호가 맞지 않습니다.",
    "login.rate_limited": "로그인 시도가 너무 많습니다. 잠시 후 다시 시도하세요.",
    "login.expired": "세션이 만료되었습니다. 다시 로그인하세요.",
    "login.hint": "데모 계정은 credentials.json 에 있습니다.",
    "conn.connecting": "연결 중…",
    "conn.live": "실시간",
    "conn.reconnecting": "재연결 중… ({seconds}초 후)",
    "conn.degraded": "제한 모드: {seconds}초마다 갱신",
    "conn.offline": "연결 끊김",
    "conn.label": "연결 상태",
    "board.title": "기기 현황",
    "board.empty": "기기 정보를 기다리는 중…",
    "board.count": "{available}/{total}대 이용 가능",
    "board.tile.label": "{name}: {status}",
    "board.session_left": "남은 시간 {time}",
    "board.slot_now": "예약 {range}",
    "board.next_in": "다음 예약 {time} 후",
    "board.next_at": "다음 예약 {range}",
    "board.book_hint": "눌러서 예약",
    "board.stale": "주기 갱신 값 (실시간 아님)",
    "status.available": "이용 가능",
    "status.in_use": "사용 중",
    "status.reserved": "예약됨",
    "status.offline": "오프라인",
    "status.fault": "고장",
    "status.maintenance": "점검 중",
    "kind.pc": "PC",
    "kind.console": "콘솔",
    "kind.racing": "레이싱",
    "kind.vr": "VR",
    "zone.pc-zone": "PC 존",
    "zone.console-corner": "콘솔 코너",
    "zone.sim-bay": "시뮬레이터 베이",
    "mine.title": "내 예약",
    "mine.empty": "예약이 없습니다.",
    "mine.code": "체크인 코드 {code}",
    "mine.cancel": "취소",
    "mine.cancel_label": "{name} {range} 예약 취소",
    "mine.sending": "전송 중…",
    "mine.cancelled": "예약을 취소했습니다.",
    "mine.unconfirmed": "확인 중: 응답을 받지 못했습니다",
    "res.pending": "승인 대기",
    "res.approved": "승인됨",
    "res.checked_in": "체크인 완료",
    "res.completed": "완료",
    "res.cancelled": "취소됨",
    "res.rejected": "거절됨",
    "res.no_show": "노쇼",
    "book.title": "기기 예약",
    "book.device": "기기",
    "book.start": "시작",
    "book.start_now": "지금",
    "book.duration": "이용 시간",
    "book.minutes": "{minutes}분",
    "book.hours": "{hours}시간",
    "book.submit": "예약하기",
    "book.close": "닫기",
    "book.sending": "예약 요청 중…",
    "book.status_now": "현재 상태: {status}",
    "book.next_slot": "다음 예약: {range}",
    "book.no_next": "예정된 예약 없음",
    "book.warning": "다른 사람이 방금 겹치는 시간({range})을 예약했습니다.",
    "book.warning_board": "이 시간대({range})는 이미 예약되어 있습니다.",
    "book.requested": "예약을 요청했습니다: {name} {range}",
    "book.fallback": "실시간 연결이 없어 REST로 예약합니다.",
    "book.unconfirmed": "응답이 없습니다. 예약을 '확인 중'으로 두고 같은 요청으로 다시 확인합니다.",
    "book.refused": "예약하지 못했습니다 ({name} {range}): {reason}",
    "error.conflict": "이미 예약된 시간과 겹칩니다: {range} ({status})",
    "error.conflict_plain": "이미 예약된 시간과 겹칩니다.",
    "error.not_found": "기기나 예약을 찾을 수 없습니다.",
    "error.forbidden": "권한이 없습니다.",
    "error.invalid": "요청이 올바르지 않습니다.",
    "error.invalid_transition": "지금 상태에서는 할 수 없습니다.",
    "error.in_past": "이미 지난 시간입니다.",
    "error.too_long": "이용 시간이 너무 깁니다.",
    "error.outside_hours": "영업시간이 아닙니다.",
    "error.device_unavailable": "점검 중인 기기입니다.",
    "error.limit_reached": "예약 가능한 개수를 넘었습니다.",
    "error.bad_code": "체크인 코드가 맞지 않습니다.",
    "error.too_early": "아직 체크인할 수 없습니다.",
    "error.suspended": "노쇼가 쌓여 {until}까지 직접 예약할 수 없습니다. 카운터에 문의하세요.",
    "error.suspended_plain": "노쇼가 쌓여 지금은 직접 예약할 수 없습니다.",
    "error.offer_expired": "제안 시간이 지났습니다. 다음 분께 넘어갔습니다.",
    "error.party_conflict": "{seat} 자리가 비어 있지 않아 아무것도 예약하지 않았습니다.",
    "error.rate_limited": "요청이 너무 많습니다. 잠시 후 다시 시도하세요.",
    "error.timeout": "응답이 없습니다. 다시 시도하세요.",
    "error.network": "서버에 연결할 수 없습니다.",
    "error.unconfirmed": "응답이 없어 결과를 다시 확인합니다.",
    "error.generic": "오류가 발생했습니다 ({code}).",
    "notif.title": "알림",
    "notif.empty": "알림이 없습니다.",
    "notif.unread": "읽지 않은 알림 {count}개",
    "notif.mark_read": "모두 읽음",
    "notif.close": "닫기",
    "notif.dismiss": "알림 닫기",
    "notif.type.reservation_approved": "예약 승인",
    "notif.type.reservation_rejected": "예약 거절",
    "notif.type.reservation_cancelled": "예약 취소",
    "notif.type.reservation_reminder": "예약 알림",
    "notif.type.no_show_released": "노쇼 처리",
    "notif.type.device_offline_during_reservation": "예약 기기 오프라인",
    "notif.type.system_notice": "공지",
    "notif.type.reservation_created": "예약 접수",
    "notif.type.reservation_checked_in": "체크인 완료",
    "notif.type.reservation_completed": "이용 완료",
    "notif.type.digest": "새 알림",
    "notif.offer": "대신 {name} 예약",
    "notif.offer_done": "{name}(으)로 옮겨 예약했습니다.",
    "notice.label": "공지",
    "notice.dismiss": "공지 닫기",
    "admin.title": "관리자",
    "admin.stats": "실시간 지표",
    "admin.stats.online": "온라인 기기",
    "admin.stats.cpm": "분당 명령",
    "admin.stats.p99": "명령 지연 p99",
    "admin.stats.p99_value": "≤ {value} ms",
    "admin.pending": "승인 대기 예약",
    "admin.pending.empty": "승인 대기 중인 예약이 없습니다.",
    "admin.pending.item": "{user} · {name} · {range}",
    "admin.approve": "승인",
    "admin.reject": "거절",
    "admin.approve_label": "{user}의 {name} {range} 예약 승인",
    "admin.reject_label": "{user}의 {name} {range} 예약 거절",
    "admin.approved": "승인했습니다.",
    "admin.rejected": "거절했습니다.",
    "admin.alerts": "경보",
    "admin.alerts.empty": "경보가 없습니다.",
    "admin.alerts.total": "전체 {total}건",
    "admin.alerts.ack": "확인",
    "admin.alerts.ack_label": "경보 확인: {message}",
    "admin.alerts.acked": "확인됨",
    "admin.severity.high": "높음",
    "admin.severity.medium": "보통",
    "admin.severity.low": "낮음",
    "admin.notice": "공지 보내기",
    "admin.notice.title": "제목 (한국어)",
    "admin.notice.message": "내용 (한국어)",
    "admin.notice.title_en": "제목 (영어, 선택)",
    "admin.notice.message_en": "내용 (영어, 선택)",
    "admin.notice.priority": "중요도",
    "admin.notice.send": "보내기",
    "admin.notice.sent": "공지를 보냈습니다.",
    "admin.devices": "기기 점검 설정",
    "admin.maintenance": "점검 중",
    "admin.devices.hint": "체크한 기기는 점검 중으로 표시되고 예약을 받지 않습니다.",
    "admin.maintenance_label": "{name} 점검 중으로 표시",
    "admin.saved": "저장했습니다.",
    "time.now": "지금",
  },
  en: {
    "app.title": "GamePlaza",
    "app.tagline": "Live machine board",
    "app.skip": "Skip to content",
    "lang.label": "Language",
    "lang.ko": "한국어",
    "lang.en": "English",
    "nav.board": "Board",
    "nav.admin": "Admin",
    "nav.notifications": "Notifications",
    "nav.logout": "Log out",
    "nav.user": "{user}",
    "nav.role.admin": "admin",
    "login.title": "Log in",
    "login.username": "Username",
    "login.password": "Password",
    "login.submit": "Log in",
    "login.busy": "Logging in…",
    "login.failed": "Unknown user or wrong password.",
    "login.rate_limited": "Too many attempts. Try again in a moment.",
    "login.expired": "Your session has expired. Please log in again.",
    "login.hint": "Demo accounts are in credentials.json.",
    "conn.connecting": "Connecting…",
    "conn.live": "Live",
    "conn.reconnecting": "Reconnecting… (in {seconds} s)",
    "conn.degraded": "Degraded: refreshing every {seconds} s",
    "conn.offline": "Offline",
    "conn.label": "Connection",
    "board.title": "Machines",
    "board.empty": "Waiting for the machines…",
    "board.count": "{available} of {total} available",
    "board.tile.label": "{name}: {status}",
    "board.session_left": "{time} left",
    "board.slot_now": "Booked {range}",
    "board.next_in": "Next booking in {time}",
    "board.next_at": "Next booking {range}",
    "board.book_hint": "Select to book",
    "board.stale": "Polled, not live",
    "status.available": "Available",
    "status.in_use": "In use",
    "status.reserved": "Reserved",
    "status.offline": "Offline",
    "status.fault": "Fault",
    "status.maintenance": "Maintenance",
    "kind.pc": "PC",
    "kind.console": "Console",
    "kind.racing": "Racing",
    "kind.vr": "VR",
    "zone.pc-zone": "PC zone",
    "zone.console-corner": "Console corner",
    "zone.sim-bay": "Simulator bay",
    "mine.title": "My reservations",
    "mine.empty": "No reservations.",
    "mine.code": "Check-in code {code}",
    "mine.cancel": "Cancel",
    "mine.cancel_label": "Cancel the booking of {name} {range}",
    "mine.sending": "Sending…",
    "mine.cancelled": "Reservation cancelled.",
    "mine.unconfirmed": "Unconfirmed: no answer yet",
    "res.pending": "Pending",
    "res.approved": "Approved",
    "res.checked_in": "Checked in",
    "res.completed": "Completed",
    "res.cancelled": "Cancelled",
    "res.rejected": "Rejected",
    "res.no_show": "No-show",
    "book.title": "Book a machine",
    "book.device": "Machine",
    "book.start": "Start",
    "book.start_now": "Now",
    "book.duration": "Duration",
    "book.minutes": "{minutes} min",
    "book.hours": "{hours} h",
    "book.submit": "Book",
    "book.close": "Close",
    "book.sending": "Sending the booking…",
    "book.status_now": "Now: {status}",
    "book.next_slot": "Next booking: {range}",
    "book.no_next": "No upcoming booking",
    "book.warning": "Someone just booked an overlapping slot ({range}).",
    "book.warning_board": "This slot ({range}) is already booked.",
    "book.requested": "Booking requested: {name} {range}",
    "book.fallback": "No live connection: booking over REST.",
    "book.unconfirmed": "No answer yet: the booking stays unconfirmed and is checked again with the same request.",
    "book.refused": "Booking not made ({name} {range}): {reason}",
    "error.conflict": "That overlaps an existing booking: {range} ({status})",
    "error.conflict_plain": "That overlaps an existing booking.",
    "error.not_found": "No such machine or reservation.",
    "error.forbidden": "Not allowed.",
    "error.invalid": "The request is not valid.",
    "error.invalid_transition": "Not possible in its current state.",
    "error.in_past": "That time has passed.",
    "error.too_long": "That slot is too long.",
    "error.outside_hours": "Outside opening hours.",
    "error.device_unavailable": "The machine is in maintenance.",
    "error.limit_reached": "You hold the maximum number of bookings.",
    "error.bad_code": "Wrong check-in code.",
    "error.too_early": "Too early to check in.",
    "error.suspended": "After repeated no-shows you cannot book yourself until {until}. Ask at the counter.",
    "error.suspended_plain": "After repeated no-shows you cannot book yourself for now.",
    "error.offer_expired": "The offer has lapsed; it went to the next in line.",
    "error.party_conflict": "{seat} is not free, so nothing was booked.",
    "error.rate_limited": "Too many requests. Try again in a moment.",
    "error.timeout": "No answer. Please try again.",
    "error.network": "The server cannot be reached.",
    "error.unconfirmed": "No answer: checking the result again.",
    "error.generic": "Something went wrong ({code}).",
    "notif.title": "Notifications",
    "notif.empty": "No notifications.",
    "notif.unread": "{count} unread notifications",
    "notif.mark_read": "Mark all read",
    "notif.close": "Close",
    "notif.dismiss": "Dismiss notification",
    "notif.type.reservation_approved": "Reservation approved",
    "notif.type.reservation_rejected": "Reservation rejected",
    "notif.type.reservation_cancelled": "Reservation cancelled",
    "notif.type.reservation_reminder": "Reminder",
    "notif.type.no_show_released": "No-show",
    "notif.type.device_offline_during_reservation": "Booked machine offline",
    "notif.type.system_notice": "Notice",
    "notif.type.reservation_created": "Reservation received",
    "notif.type.reservation_checked_in": "Checked in",
    "notif.type.reservation_completed": "Session over",
    "notif.type.digest": "New notifications",
    "notif.offer": "Book {name} instead",
    "notif.offer_done": "Moved your booking to {name}.",
    "notice.label": "Notice",
    "notice.dismiss": "Dismiss notice",
    "admin.title": "Admin",
    "admin.stats": "Live figures",
    "admin.stats.online": "Machines online",
    "admin.stats.cpm": "Commands per minute",
    "admin.stats.p99": "Command latency p99",
    "admin.stats.p99_value": "≤ {value} ms",
    "admin.pending": "Pending approvals",
    "admin.pending.empty": "Nothing waits for approval.",
    "admin.pending.item": "{user} · {name} · {range}",
    "admin.approve": "Approve",
    "admin.reject": "Reject",
    "admin.approve_label": "Approve {user}'s booking of {name} {range}",
    "admin.reject_label": "Reject {user}'s booking of {name} {range}",
    "admin.approved": "Approved.",
    "admin.rejected": "Rejected.",
    "admin.alerts": "Alerts",
    "admin.alerts.empty": "No alerts.",
    "admin.alerts.total": "{total} in all",
    "admin.alerts.ack": "Acknowledge",
    "admin.alerts.ack_label": "Acknowledge the alert: {message}",
    "admin.alerts.acked": "Acknowledged",
    "admin.severity.high": "high",
    "admin.severity.medium": "medium",
    "admin.severity.low": "low",
    "admin.notice": "Broadcast a notice",
    "admin.notice.title": "Title (Korean)",
    "admin.notice.message": "Message (Korean)",
    "admin.notice.title_en": "Title (English, optional)",
    "admin.notice.message_en": "Message (English, optional)",
    "admin.notice.priority": "Priority",
    "admin.notice.send": "Send",
    "admin.notice.sent": "Notice sent.",
    "admin.devices": "Machine maintenance",
    "admin.maintenance": "Maintenance",
    "admin.devices.hint": "Checked machines show as in maintenance and take no bookings.",
    "admin.maintenance_label": "Mark {name} as in maintenance",
    "admin.saved": "Saved.",
    "time.now": "now",
  },
};

export const LOCALES = Object.keys(CATALOGUE);
const STORE_KEY = "plaza.locale";
const listeners = new Set();
let locale = pick(localStorage.getItem(STORE_KEY) || "ko");

function pick(value) {
  return LOCALES.includes(value) ? value : "ko";
}

export function currentLocale() {
  return locale;
}

/** The message `key` for the current locale, with `{name}` placeholders filled. */
export function t(key, params = {}) {
  const text = CATALOGUE[locale][key] ?? CATALOGUE.ko[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in params ? String(params[name]) : ""));
}

export function has(key) {
  return key in CATALOGUE[locale];
}

/** `t(key)` when the catalogue has it, else `fallback` (zone and kind names come from data). */
export function tOr(key, fallback) {
  return key in CATALOGUE[locale] ? t(key) : fallback;
}

export function setLocale(value) {
  const next = pick(value);
  localStorage.setItem(STORE_KEY, next);
  if (next === locale) return;
  locale = next;
  applyI18n();
  for (const fn of listeners) fn(locale);
}

export function onLocaleChange(fn) {
  listeners.add(fn);
}

const ATTRIBUTES = [
  ["i18nPlaceholder", "placeholder"],
  ["i18nAriaLabel", "aria-label"],
  ["i18nTitle", "title"],
];

export function applyI18n(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const [data, attr] of ATTRIBUTES) {
    const selector = `[data-${data.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase())}]`;
    for (const el of root.querySelectorAll(selector)) el.setAttribute(attr, t(el.dataset[data]));
  }
  if (root === document) {
    document.documentElement.lang = locale;
    document.title = t("app.title");
  }
}

// -- formatting ------------------------------------------------------------------------------
const BCP47 = { ko: "ko-KR", en: "en-GB" };

export function clock(unix) {
  const options = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
  return new Intl.DateTimeFormat(BCP47[locale], options).format(new Date(unix * 1000));
}

export function day(unix) {
  return new Intl.DateTimeFormat(BCP47[locale], { month: "short", day: "numeric" }).format(
    new Date(unix * 1000),
  );
}

/** "11/24 19:00": a day and a time. */
export function dateTime(unix) {
  return `${day(unix)} ${clock(unix)}`;
}

/** A number in the page's language, at most one decimal. */
export function number(value) {
  return new Intl.NumberFormat(BCP47[locale], { maximumFractionDigits: 1 }).format(value);
}

/** "19:00–20:00", with the day in front when the slot is not today. */
export function range(starts, ends) {
  const today = new Date().toDateString() === new Date(starts * 1000).toDateString();
  return `${today ? "" : day(starts) + " "}${clock(starts)}–${clock(ends)}`;
}

/** A countdown: "4:05", "1:02:03". */
export function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}
