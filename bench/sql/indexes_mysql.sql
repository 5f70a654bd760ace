SET SESSION foreign_key_checks = 0;
ALTER TABLE blog_article
    ADD UNIQUE KEY blog_article_uuid_key (uuid),
    ADD UNIQUE KEY blog_article_slug_key (slug),
    ADD KEY blog_article_author_idx (author_id),
    ADD KEY blog_article_created_idx (created_at),
    ADD KEY blog_article_status_created_idx (status, created_at),
    ADD CONSTRAINT blog_article_author_fk FOREIGN KEY (author_id) REFERENCES auth_user (id);
ALTER TABLE blog_comment
    ADD KEY blog_comment_article_idx (article_id),
    ADD KEY blog_comment_author_idx (author_id),
    ADD KEY blog_comment_created_idx (created_at),
    ADD CONSTRAINT blog_comment_article_fk FOREIGN KEY (article_id) REFERENCES blog_article (id),
    ADD CONSTRAINT blog_comment_author_fk FOREIGN KEY (author_id) REFERENCES auth_user (id);
