from django.db import models


class Item(models.Model):
    name = models.CharField(max_length=200)
    body = models.TextField()
    data = models.JSONField(null=True)
    created = models.DateTimeField()
