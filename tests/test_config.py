import pytest

from strongroom.config import ConfigError, load_settings, locate_fields, parse_settings

GOOD = """
timezone = "Europe/Berlin"

[repository]
location = "/srv/backups"
key_file = "/etc/strongroom/repo.key"

[targets.shop]
url_env = "DATABASE_URL"
schedule = { daily = "0 2 * * *", weekly = "0 3 * * 0", monthly = "0 4 1 * *" }
hooks = { post_restore = ["npx prisma migrate deploy"] }

[targets.shop.retention]
keep_daily = 7
keep_weekly = 4
keep_within = "2d"

[targets.shop.verify]
schedule = "0 5 * * 0"
check_sql = "checks.sql"

[notifications]
on_success = true
size_change_percent = 50

[[notifications.channels]]
type = "slack"
webhook_url_env = "SLACK_WEBHOOK_URL"

[[notifications.channels]]
type = "email"
host = "smtp.example.com"
sender = "backups@example.com"
recipients = ["ops@example.com"]
username = "backups"
password_env = "SMTP_PASSWORD"
"""

BAD = """timezone = "Mars/Olympus"

[repository]
location = "/srv/backups"

[targets.shop]
url_env = "DATABASE_URL"
schedule = { daily = "0 2 * * *", weekly = "every sunday" }

[targets.shop.retention]
keep_daily = -1
keep_within = "30 days"

[targets.blog]
schedule = { daily = "0 3 * * *" }

[[notifications.channels]]
type = "slack"

[[notifications.channels]]
type = "pager"
unknown_field = 1
"""


def test_a_full_configuration_parses():
    settings = parse_settings(GOOD)
    shop = settings.targets["shop"]
    assert shop.schedule["weekly"] == "0 3 * * 0"
    assert shop.hooks.post_restore == ["npx prisma migrate deploy"]
    policy = settings.retention_for("shop", {})
    assert policy.keep_daily == 7 and policy.timezone == "Europe/Berlin"
    assert policy.keep_within is not None and policy.keep_within.days == 2
    assert [c.type for c in settings.notifications.channels] == ["slack", "email"]


def test_every_error_names_its_field_and_line():
    with pytest.raises(ConfigError) as caught:
        parse_settings(BAD, "bad.toml")
    problems = caught.value.problems
    expected = [
        ("line 1:", "timezone", "unknown time zone"),
        ("line 8:", "targets.shop.schedule", "not a cron expression"),
        ("line 11:", "targets.shop.retention.keep_daily", "greater than or equal to 0"),
        ("line 12:", "targets.shop.retention.keep_within", "invalid duration"),
        ("line 14:", "targets.blog", "exactly one of url or url_env"),
        ("line 17:", "notifications.channels.0", "webhook_url"),
        ("line 21:", "notifications.channels.1.type", "'slack', 'webhook' or 'email'"),
        ("line 22:", "notifications.channels.1.unknown_field", "not permitted"),
    ]
    for line, field, message in expected:
        assert any(p.startswith(f"{line} {field}:") and message in p for p in problems), (
            line,
            problems,
        )
    assert str(caught.value).startswith("bad.toml: line 1: timezone")


def test_broken_toml_is_one_clear_error():
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_settings("[repository\nlocation = 1")


def test_field_locator_handles_arrays_of_tables():
    lines = locate_fields(GOOD)
    assert lines[("notifications", "channels", "1", "host")] == 32
    assert lines[("targets", "shop", "verify", "schedule")] == 19


def test_the_scripts_environment_variables_work_without_a_file(tmp_path):
    env = {
        "BACKUP_DIR": str(tmp_path / "backups"),
        "DATABASE_URL": "postgresql://app:pw@db.internal:5432/shop",
        "BACKUP_RETENTION_DAYS": "30",
        "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/x",
    }
    settings = load_settings(None, env)
    assert settings.repository.location == str(tmp_path / "backups")
    assert settings.targets["shop"].url_env == "DATABASE_URL"
    assert settings.targets["shop"].schedule == {"daily": "0 2 * * *"}
    assert settings.retention_for("shop", env).keep_within.days == 30
    assert settings.notifications.channels[0].type == "slack"
    s3 = load_settings(None, {"BACKUP_S3_BUCKET": "my-bucket"})
    assert s3.repository.location == "s3://my-bucket"
    default = load_settings(None, {"BACKUP_DIR": "/x"})
    assert default.retention_for("any", {}).keep_monthly == 12


def test_no_configuration_at_all_is_a_usage_error():
    with pytest.raises(Exception, match="no configuration"):
        load_settings(None, {})


@pytest.mark.parametrize("name", ["..", "a/b", ".hidden", "tab\there"])
def test_a_target_name_a_backup_would_refuse_is_a_configuration_error(name):
    """The configuration refuses the target names ``repository/names.py`` refuses, so
    `config check` finds them before a scheduled backup fails on them."""
    text = f'[repository]\nlocation = "/srv/b"\n\n[targets."{name}"]\nurl = "sqlite:///x.db"\n'
    text = text.replace("\t", "\\t")
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, "s.toml")
    assert any("is not allowed" in p for p in caught.value.problems), caught.value.problems
