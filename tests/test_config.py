import pytest

from strongroom.config import ConfigError, locate_fields, parse_settings
from strongroom.services.settings_sources import Sources, load_settings

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
    settings = load_settings(None, env, tmp_path)
    assert settings.repository.location == str(tmp_path / "backups")
    assert settings.targets["shop"].url_env == "DATABASE_URL"
    assert settings.targets["shop"].schedule == {"daily": "0 2 * * *"}
    assert settings.retention_for("shop", env).keep_within.days == 30
    assert settings.notifications.channels[0].type == "slack"
    s3 = load_settings(None, {"BACKUP_S3_BUCKET": "my-bucket"})
    assert s3.repository.location == "s3://my-bucket"
    default = load_settings(None, {"BACKUP_DIR": "/x"})
    assert default.retention_for("any", {}).keep_monthly == 12


def test_no_configuration_at_all_is_a_usage_error(tmp_path):
    with pytest.raises(Exception, match="no repository given"):
        load_settings(None, {}, tmp_path)


@pytest.mark.parametrize("name", ["..", "a/b", ".hidden", "tab\there"])
def test_a_target_name_a_backup_would_refuse_is_a_configuration_error(name):
    """The configuration refuses the target names ``repository/names.py`` refuses, so
    `config check` finds them before a scheduled backup fails on them."""
    text = f'[repository]\nlocation = "/srv/b"\n\n[targets."{name}"]\nurl = "sqlite:///x.db"\n'
    text = text.replace("\t", "\\t")
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, "s.toml")
    assert any("is not allowed" in p for p in caught.value.problems), caught.value.problems


def test_each_field_comes_from_the_first_source_that_gives_it(tmp_path):
    """flags, then STRONGROOM_*, then the file, then the scripts' variables."""
    (tmp_path / "strongroom.toml").write_text(
        '[repository]\nlocation = "/from/file"\ns3_endpoint = "http://file:9000"\n'
    )
    env = {"BACKUP_DIR": "/from/script", "AWS_ENDPOINT_URL": "http://script:9000"}
    sources = Sources.load(None, env, tmp_path)
    assert sources.location().location == "/from/file"
    assert sources.location().s3_endpoint == "http://file:9000"
    own = Sources.load(
        None, {**env, "STRONGROOM_REPO": "/own", "STRONGROOM_S3_ENDPOINT": "http://own"}, tmp_path
    )
    assert (own.location().location, own.location().s3_endpoint) == ("/own", "http://own")
    assert own.location("/flag", None, "http://flag").location == "/flag"
    scripts = Sources.load(None, env, tmp_path / "elsewhere")
    assert (scripts.location().location, scripts.location().s3_endpoint) == (
        "/from/script",
        "http://script:9000",
    )


@pytest.mark.parametrize(
    ("env", "location"),
    [
        ({"BACKUP_PATH": "/b"}, "/b"),
        ({"S3_BUCKET": "bucket"}, "s3://bucket"),
        ({"S3_BACKUP_BUCKET": "s3://bucket/prefix/"}, "s3://bucket/prefix"),
        ({"BACKUP_S3_BUCKET": "b1", "S3_BUCKET": "b2"}, "s3://b1"),
        ({"BACKUP_DIR": "/d", "BACKUP_S3_BUCKET": "b"}, "/d"),
    ],
)
def test_the_scripts_repository_names(tmp_path, env, location):
    assert Sources.load(None, env, tmp_path).location().location == location


def test_r2_account_id_gives_the_endpoint_only_with_r2_credentials(tmp_path):
    r2 = {"S3_BUCKET": "b", "CLOUDFLARE_ACCOUNT_ID": "acc123", "CLOUDFLARE_ACCESS_KEY_ID": "k"}
    settings = Sources.load(None, r2, tmp_path).settings(targets=False)
    assert settings.repository.s3_endpoint == "https://acc123.r2.cloudflarestorage.com"
    aws = {**r2, "AWS_ACCESS_KEY_ID": "aws"}
    assert Sources.load(None, aws, tmp_path).settings(targets=False).repository.s3_endpoint is None


def test_r2_credentials_without_an_endpoint_are_refused_in_one_line(tmp_path):
    env = {"S3_BUCKET": "b", "CLOUDFLARE_ACCESS_KEY_ID": "k", "CLOUDFLARE_SECRET_ACCESS_KEY": "s"}
    with pytest.raises(Exception, match="set CLOUDFLARE_ACCOUNT_ID"):
        Sources.load(None, env, tmp_path).location()


def test_retention_days_names_and_their_source(tmp_path):
    policy, source, _ = Sources.load(None, {"RETENTION_DAYS": "9"}, tmp_path).retention(
        None, None, None
    )
    assert (policy.keep_within.days, source) == (9, "RETENTION_DAYS")
    with pytest.raises(Exception, match="RETENTION_DAYS must be a positive"):
        Sources.load(None, {"RETENTION_DAYS": "x"}, tmp_path).retention(None, None, None)


def test_notification_channels_from_the_scripts_variables(tmp_path, caplog):
    env = {"BACKUP_DIR": "/b", "SLACK_WEBHOOK": "https://hooks.slack.com/services/T/B/x"}
    channels = Sources.load(None, env, tmp_path).notifications().channels
    assert [(c.type, c.webhook_url_env) for c in channels] == [("slack", "SLACK_WEBHOOK")]
    email = {"BACKUP_NOTIFICATION_EMAIL": "ops@example.com, cto@example.com"}
    assert Sources.load(None, email, tmp_path).notifications().channels == []
    assert "SMTP_HOST is not" in caplog.text
    email |= {"SMTP_HOST": "smtp.example.com", "SMTP_PORT": "2525", "SMTP_PASS": "pw"}
    (channel,) = Sources.load(None, email, tmp_path).notifications().channels
    assert (channel.host, channel.port, channel.password_env) == (
        "smtp.example.com",
        2525,
        "SMTP_PASS",
    )
    assert channel.recipients == ["ops@example.com", "cto@example.com"]


def test_a_webhook_url_can_come_from_the_environment():
    from strongroom.services.notifications import build_channel

    settings = parse_settings(
        '[repository]\nlocation = "/b"\n[[notifications.channels]]\ntype = "webhook"\n'
        'url_env = "HOOK_URL"\nsecret_env = "HOOK_SECRET"\n'
    )
    channel = build_channel(
        settings.notifications.channels[0],
        {"HOOK_URL": "https://example.com/h", "HOOK_SECRET": "s"},
    )
    assert channel._url == "https://example.com/h"
    with pytest.raises(Exception, match="HOOK_URL"):
        build_channel(settings.notifications.channels[0], {"HOOK_SECRET": "s"})


def test_a_file_without_a_repository_still_gives_its_targets(tmp_path):
    """The repository may come from a flag or a variable; the file's targets still count."""
    (tmp_path / "strongroom.toml").write_text('[targets.shop]\nurl_env = "SHOP_URL"\n')
    sources = Sources.load(None, {"SHOP_URL": "sqlite:////srv/shop.db"}, tmp_path)
    assert sources.database(None, None) == ("sqlite:////srv/shop.db", "shop")
    assert sources.location("/flag").location == "/flag"
    with pytest.raises(Exception, match="no repository given"):
        sources.location()


@pytest.mark.parametrize(
    ("written", "kept"),
    [
        ("Europe/Berlin", "Europe/Berlin"),
        ("posix/Europe/Berlin", "Europe/Berlin"),  # tzdata's copy: the browser knows no posix/
        ("right/Asia/Kathmandu", "Asia/Kathmandu"),
        (" UTC ", "UTC"),
    ],
)
def test_a_time_zone_is_kept_under_its_iana_name(written, kept):
    text = f'timezone = "{written}"\n[repository]\nlocation = "/srv/b"\n'
    assert parse_settings(text, "z.toml").timezone == kept


@pytest.mark.parametrize("written", ["localtime", "posixrules", "Factory", "posix/Nowhere"])
def test_a_zone_file_that_names_no_zone_is_refused_with_an_example(written):
    text = f'timezone = "{written}"\n[repository]\nlocation = "/srv/b"\n'
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, "z.toml")
    assert "e.g. Europe/Berlin" in str(caught.value.problems)
