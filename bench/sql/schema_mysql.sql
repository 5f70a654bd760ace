-- The benchmark's own tables, beside what Django's migrate made (auth_user,
-- django_session). Django stores a UUIDField as char(32) on MariaDB.
-- Secondary keys, foreign keys and indexes come after loading (indexes_mysql.sql).
CREATE TABLE blog_article (
    id bigint NOT NULL AUTO_INCREMENT PRIMARY KEY,
    uuid char(32) NOT NULL,
    author_id integer NOT NULL,
    title varchar(200) NOT NULL,
    slug varchar(255) NOT NULL,
    body longtext NOT NULL,
    metadata json NOT NULL,
    status varchar(10) NOT NULL,
    view_count integer NOT NULL,
    created_at datetime(6) NOT NULL,
    updated_at datetime(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE blog_comment (
    id bigint NOT NULL AUTO_INCREMENT PRIMARY KEY,
    article_id bigint NOT NULL,
    author_id integer NOT NULL,
    body longtext NOT NULL,
    metadata json NOT NULL,
    created_at datetime(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
