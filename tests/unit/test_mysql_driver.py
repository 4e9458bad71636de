"""The MySQL/MariaDB driver's pure parts: which client a URL means, which servers are refused."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from jobstead.errors import ConfigurationError
from jobstead.store.drivers import driver_for
from jobstead.store.drivers.mysql import MySQLDriver, check_server_version


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("mysql://u:p@db/app", "mysql+mysqldb"),
        ("mariadb://u:p@db/app", "mariadb+mysqldb"),
        ("mysql+mysqldb://u:p@db/app", "mysql+mysqldb"),
        ("mariadb+pymysql://u:p@db/app", "mariadb+pymysql"),
        ("mysql+pymysql://u:p@db/app", "mysql+pymysql"),
        # An app's async URL: Jobstead's own engine speaks to the same server through the sync client.
        ("mysql+asyncmy://u:p@db/app", "mysql+mysqldb"),
        ("mariadb+aiomysql://u:p@db/app", "mariadb+mysqldb"),
    ],
)
def test_each_url_form_picks_a_client_of_the_extra(given: str, used: str) -> None:
    url = make_url(given)
    driver = driver_for(url)
    assert isinstance(driver, MySQLDriver)
    normalized = driver.normalize_url(url)
    assert normalized.drivername == used
    assert normalized.query["charset"] == "utf8mb4"
    assert (normalized.host, normalized.database, normalized.password) == ("db", "app", "p")


def test_an_unsupported_client_is_one_clear_line() -> None:
    url = make_url("mysql+mysqlconnector://u:secret@db/app")
    with pytest.raises(ConfigurationError, match=r"mysql\+mysqlconnector:// is not supported") as caught:
        driver_for(url).normalize_url(url)
    assert "secret" not in str(caught.value) and "\n" not in str(caught.value)


def test_describe_never_shows_the_password() -> None:
    url = make_url("mariadb://jobs:secret@db.internal:3307/app")
    described = driver_for(url).describe(url)
    assert described == "MySQL database 'app' on db.internal:3307 as jobs"


@pytest.mark.parametrize(
    "version",
    ["10.6.0-MariaDB", "10.11.19-MariaDB-0+deb12u1", "5.5.5-10.6.12-MariaDB-log", "11.4.2-MariaDB"],
)
def test_mariadb_servers_with_skip_locked_are_accepted(version: str) -> None:
    check_server_version(version)


@pytest.mark.parametrize("version", ["8.0.36", "8.4.0", "9.1.0"])
def test_mysql_is_refused_at_connect_until_it_works(version: str) -> None:
    """MySQL has no INSERT ... RETURNING: accepted, it would fail at the first defer with an SQL error."""
    with pytest.raises(ConfigurationError, match=r"^MySQL \d+\.\d+ is not supported yet: .* use MariaDB 10.6"):
        check_server_version(version)


@pytest.mark.parametrize(
    ("version", "needed"),
    [
        ("10.5.23-MariaDB", "MariaDB 10.5 is too old for Jobstead: it needs MariaDB 10.6 or later"),
        ("5.5.5-10.3.39-MariaDB-0+deb10u1", "MariaDB 10.3 is too old for Jobstead: it needs MariaDB 10.6 or later"),
        ("5.7.44-log", "MySQL 5.7 is too old for Jobstead: it needs MySQL 8.0 or later"),
    ],
)
def test_older_servers_are_refused_naming_the_version_needed(version: str, needed: str) -> None:
    with pytest.raises(ConfigurationError, match=needed):
        check_server_version(version)
