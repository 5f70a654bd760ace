from django.urls import include, path

urlpatterns = [path("logging/", include("shop.logging_views"))]
