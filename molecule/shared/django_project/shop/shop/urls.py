from catalog import views as catalog_views
from django.urls import include, path

urlpatterns = [
    path("logging/", include("shop.logging_views")),
    path("catalog/checksum/", catalog_views.checksum),
]
