#!/bin/sh
# MariaDB for the compose cluster: a database `arcade` and its user, made at first start.
set -eu
port=${PORT:-3306}
data=/var/lib/mysql
if [ ! -d "$data/mysql" ]; then
    mariadb-install-db --user=mysql --datadir="$data" >/dev/null
fi
mkdir -p /run/mysqld
chown mysql:mysql /run/mysqld
cat >/run/mysqld/init.sql <<SQL
CREATE DATABASE IF NOT EXISTS arcade;
CREATE USER IF NOT EXISTS 'arcade'@'%' IDENTIFIED BY '${ARCADE_DB_PASSWORD:-arcade}';
GRANT ALL ON arcade.* TO 'arcade'@'%';
SQL
exec mariadbd --user=mysql --datadir="$data" --bind-address=127.0.0.1 --port="$port" \
    --socket=/run/mysqld/mysqld.sock --init-file=/run/mysqld/init.sql
