"""What each kind of notification says, in English and Chinese, and how an e-mail of it looks (a
plain-text and an HTML part). Pure: the raisers pick the facts a recipient may see; this only
words them. Titles and bodies are stored in the recipient's language when the notification is
raised, so the inbox and the e-mail say the same thing."""
from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr, formatdate, parseaddr
from zoneinfo import ZoneInfo

LANGUAGES = ("en", "zh")

# type -> language -> (title, body), formatted with the facts the raiser gives.
TEMPLATES: dict[str, dict[str, tuple[str, str]]] = {
    "lead_assigned": {
        "en": ("New lead: {company}", "{company} ({contact}) is yours to follow up{why}. Follow up by {due}."),
        "zh": ("新线索：{company}", "{company}（{contact}）已分配给您{why}，请在 {due} 前跟进。"),
    },
    "follow_up_due": {
        "en": ("Follow up {title}", "{what} for {title} is due at {due}."),
        "zh": ("请跟进 {title}", "{title} 的{what}将于 {due} 到期。"),
    },
    "follow_up_overdue": {
        "en": ("Overdue: {title}", "{what} for {title} was due at {due} and nothing has been logged since{whose}."),
        "zh": ("已逾期：{title}", "{title} 的{what}已于 {due} 到期，至今未记录任何跟进{whose}。"),
    },
    "activity_logged": {
        "en": ("{actor} logged a {kind} on {title}", "{summary}"),
        "zh": ("{actor} 在 {title} 上记录了{kind}", "{summary}"),
    },
    "collision": {
        "en": ("Possible collision: {title}", "{title} looks like a deal another rep is working on. "
               "Check the collisions on the deal and talk to your manager."),
        "zh": ("可能撞单：{title}", "{title} 与其他销售正在跟进的商机相似，请查看该商机的撞单信息并与经理沟通。"),
    },
    "approval_requested": {
        "en": ("Order {number} waits for your approval", "Order {number} needs your decision ({level})."),
        "zh": ("订单 {number} 待您审批", "订单 {number} 需要您审批（{level}）。"),
    },
    "approval_decided": {
        "en": ("Order {number} {decision}", "Order {number} was {decision} by {actor}.{comment}"),
        "zh": ("订单 {number} {decision}", "订单 {number} 已被 {actor} {decision}。{comment}"),
    },
    "approval_closed": {
        "en": ("Order {number}: approval closed", "The approval of order {number} was closed without a decision "
               "(the order was cancelled or changed)."),
        "zh": ("订单 {number} 的审批已关闭", "订单 {number} 的审批未经决定即已关闭（订单已取消或修改）。"),
    },
    "approval_escalated": {
        "en": ("Order {number} escalated to you", "Order {number} waited too long and now needs your decision."),
        "zh": ("订单 {number} 已升级给您", "订单 {number} 等待过久，现需要您审批。"),
    },
    "target_reached": {
        "en": ("{whose} {metric} target reached", "{whose} {period} {metric} attainment reached {attainment}%."),
        "zh": ("{whose}{metric}目标已达成", "{whose} {period} 的{metric}达成率已达 {attainment}%。"),
    },
    "pace_warning": {
        "en": ("{whose} {metric} is behind pace", "On day {day} of {period}, {whose} {metric} attainment is "
               "{attainment}%, below the {below}% pace."),
        "zh": ("{whose}{metric}进度落后",
               "{period} 第 {day} 天，{whose}的{metric}达成率为 {attainment}%，低于 {below}% 的进度要求。"),
    },
    "records_handed_over": {
        "en": ("{moved} {records} handed over to you", "{moved} {records} of {from_user} are now yours."),
        "zh": ("{moved} 条{records}已移交给您", "{from_user} 的 {moved} 条{records}现由您负责。"),
    },
    "import_finished": {
        "en": ("Import of {file} finished", "{created} leads created, {merged} merged into existing ones, {claimed} "
               "already someone else's (their owners were told), {rejected} rows rejected."),
        "zh": ("{file} 导入完成", "新建 {created} 条线索，合并 {merged} 条，{claimed} 条已属于他人（已通知其负责人），"
               "拒绝 {rejected} 行。"),
    },
    "import_failed": {
        "en": ("Import of {file} failed", "The import stopped: {failure}"),
        "zh": ("{file} 导入失败", "导入已停止：{failure}"),
    },
    "agenda": {
        "en": ("Your agenda for {day}", "{lines}"),
        "zh": ("{day} 的日程", "{lines}"),
    },
    "daily_report_submitted": {
        "en": ("{rep}'s daily report for {day} is in", "{rep} submitted the report of {day}: read and review it."),
        "zh": ("{rep} 已提交 {day} 的日报", "{rep} 已提交 {day} 的销售日报，请查阅并点评。"),
    },
    "daily_report_reviewed": {
        "en": ("Your daily report for {day} was reviewed", "{actor}: {comment}"),
        "zh": ("您 {day} 的日报已点评", "{actor}：{comment}"),
    },
    "delivery_failed": {
        "en": ("A webhook endpoint was disabled", "{address} failed after {attempts} attempts: {error}"),
        "zh": ("Webhook 端点已停用", "{address} 重试 {attempts} 次后仍失败：{error}"),
    },
}
# What can be raised (approval_closed is approval_decided's wording when no one decided).
TYPES = tuple(k for k in TEMPLATES if k != "approval_closed")

# Words the templates fill in, per language.
WORDS = {
    "en": {"follow_up": "The follow-up", "next_contact": "The next contact", "approved": "approved",
           "rejected": "rejected", "revenue": "revenue", "gross_margin": "gross margin", "new_accounts": "new accounts",
           "collections": "collections", "orders": "orders", "activities": "activities", "your": "Your",
           "team": "Your team's", "leads": "leads", "opportunities": "accounts and deals", "orders_service": "orders",
           "by_rule": " by the assignment rules", "reassigned": " by your manager", "handover": " in a handover",
           "call": "call", "visit": "visit", "email": "e-mail", "meeting": "meeting", "demo": "demo", "note": "note",
           "manager_too": " (your manager is told too)", "daily_report": "The daily report"},
    "zh": {"follow_up": "跟进", "next_contact": "下次联系", "approved": "已批准", "rejected": "已驳回",
           "revenue": "销售额", "gross_margin": "毛利", "new_accounts": "新客户", "collections": "回款",
           "orders": "订单数", "activities": "拜访活动", "your": "您的", "team": "您团队的", "leads": "线索",
           "opportunities": "客户与商机", "orders_service": "订单", "by_rule": "（按分配规则）",
           "reassigned": "（经理重新分配）", "handover": "（工作交接）", "call": "电话", "visit": "拜访", "email": "邮件",
           "meeting": "会议", "demo": "演示", "note": "备注", "manager_too": "（已同时通知您的经理）",
           "daily_report": "日报"},
}


def local_time(moment: dt.datetime, zone: ZoneInfo) -> str:
    """A time as people read it in messages: in their own zone, to the minute."""
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def word(language: str, key: str) -> str:
    return WORDS.get(language, WORDS["en"]).get(key, key)


@dataclass(frozen=True)
class Text:
    title: str
    body: str


class _Facts(dict):
    """A missing fact renders as nothing rather than failing the notification."""

    def __missing__(self, key):
        return ""


def render(kind: str, language: str, facts: dict) -> Text:
    title, body = TEMPLATES[kind].get(language) or TEMPLATES[kind]["en"]
    values = _Facts({k: ("" if v is None else v) for k, v in facts.items()})
    return Text(title.format_map(values)[:300], body.format_map(values))


def printable_ascii(text: str) -> bool:
    """Whether text is printable ASCII with no space: what an e-mail address must be here (a quoted
    local part may hold a control character, which would break the header it is written in)."""
    return all("!" <= c <= "~" for c in text)


def email(*, sender: str, to: str, title: str, body: str, link: str | None, base_url: str, language: str,
          delivery_id: str) -> MIMEMultipart:
    """The e-mail of a notification. Its Message-ID is the delivery's, so a receiver (or a person's
    mail client) can drop the one duplicate a crash mid-send may cost.

    Built with the compat32 MIME classes rather than EmailMessage: the default policy's header
    registry parses every header it is given, which made building a message (2.5 ms) cost more than
    sending it; these take 0.6 ms and write the same MIME."""
    if any(len(value.splitlines()) != 1 for value in (sender, to)):
        raise ValueError("an address may not hold a line break")
    message = MIMEMultipart("alternative")
    # A record's name may hold a line break; a header may not.
    subject = " ".join(title.split())
    # A display name in SMTP_FROM may be Chinese: encoded as a MIME word, the address left as it is.
    message["From"], message["To"] = formataddr(parseaddr(sender), charset="utf-8"), to
    message["Subject"] = subject if subject.isascii() else Header(subject, "utf-8")
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = f"<{delivery_id}@crm.invalid>"
    message["X-CRM-Delivery-ID"] = delivery_id
    url = f"{base_url.rstrip('/')}{link}" if link else None
    opens = {"en": "Open in the CRM", "zh": "在 CRM 中打开"}.get(language, "Open in the CRM")
    message.attach(MIMEText(body + (f"\n\n{opens}: {url}\n" if url else "\n"), "plain", "utf-8"))
    anchor = f'<p><a href="{html.escape(url)}">{html.escape(opens)}</a></p>' if url else ""
    message.attach(MIMEText(
        f'<!doctype html><html lang="{html.escape(language)}"><body><h3>{html.escape(title)}</h3>'
        f"<p>{html.escape(body)}</p>{anchor}</body></html>", "html", "utf-8"))
    return message
