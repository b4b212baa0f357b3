"""sdlaws.measure"""
